"""The dataset doctor: duplicates, leakage, likely label errors, outliers and image health,
found on cached backbone features so that a second look costs seconds."""
