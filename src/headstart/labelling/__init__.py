"""Stage 10: which photos to label next (suggest.py, strategies.py) and a page to label them
fast (page.py): where a user's time goes, more than training."""
