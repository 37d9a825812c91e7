"""SQL input and output through SQLAlchemy: connecting, reading a snapshot, writing exactly once."""
