"""Settlement: every outcome stored, dead-lettered, counted and its offset committed."""
