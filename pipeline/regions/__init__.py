"""Regions of an image to anonymize (faces): boxes, where they come from, and how a face crop
is cut out, masked and blended back. No Ray."""
