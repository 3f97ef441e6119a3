"""Environment families (one module each)."""
