"""What is drawn: the effects on I420 frames (filters), blending, the mask's refinement, background
images and the diffusion picture's compositing.
"""
