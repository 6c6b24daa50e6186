"""The paper's Tables 1–4 reproduced on ShapeScenes (``xlxmert study table1|table2|table3|table4``).

:mod:`~xlxmert.study.tables` says what each table needs (rows, their training settings, the
paper's numbers and orderings); :mod:`~xlxmert.study.runner` trains, evaluates and resumes;
:mod:`~xlxmert.study.collect` and :mod:`~xlxmert.study.intervals` turn the evaluations into means
with bootstrap intervals over seeds and captions and decide each of the paper's orderings;
:mod:`~xlxmert.study.render` writes ``OUT/tableN.md``, ``.json`` and ``.png``.
"""

from xlxmert.study.intervals import bootstrap_interval
from xlxmert.study.runner import StudyConfig, run_table
from xlxmert.study.tables import TABLES

__all__ = ["TABLES", "StudyConfig", "bootstrap_interval", "run_table"]
