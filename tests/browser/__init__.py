"""Headless Chromium driving the pages."""
