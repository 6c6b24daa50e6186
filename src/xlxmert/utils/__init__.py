"""Small shared helpers: config (de)serialisation, component folders, seeding."""
