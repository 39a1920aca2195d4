"""Thin adapters that attach babysit's watch to other training loops (lightning: pip install 'babysit[lightning]')."""
