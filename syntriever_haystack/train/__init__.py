"""Training (needs the ``train`` extra). The trainers arrive with the training issue."""
