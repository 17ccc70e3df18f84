"""NVTabular feature workflows: fit on the training split, saved, reused unchanged at serving."""
