"""Training-side data and stages (the stages themselves arrive with the training issue)."""
