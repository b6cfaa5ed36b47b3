"""What leaves a run: its trained weights as files, its samples as archives, and the
code that loads them."""
