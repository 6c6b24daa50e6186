"""Models: the X-LXMERT transformer (and its LXMERT+Grid baseline) and the SPADE image generator."""
