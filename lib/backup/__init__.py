"""The backup subsystem's shared pieces: export format and naming rules."""
