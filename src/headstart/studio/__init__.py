"""The studio: the whole loop, from photos or a webcam to an exported model, in one local page."""
