"""The per-frame pipeline: its stages (stages), the device pipeline (device), the segmenters, and
the budget that walks the quality ladder.
"""
