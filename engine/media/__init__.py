"""Frames and their timing: I420 planes (yuv), VideoFrame conversions, frame ids, one-place frame
slots, rates and the stage clock. Imports nothing else of camfx.
"""
