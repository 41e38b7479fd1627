"""Files: atomic writes, safe checkpoint loading, image grids."""
