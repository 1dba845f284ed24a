"""Shipped data files (ImageNet class names, CLIP templates); see README.md here for sources and licences."""
