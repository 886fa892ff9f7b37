"""`python -m mrcnn_tf ...` is the same as `mrcnn-tf ...`."""
from mrcnn_tf.cli import main

main()
