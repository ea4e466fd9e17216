"""postupload: post-upload automation for Cloudinary."""

QUEUE_NAME = "postupload"
BATCH_QUEUE_NAME = "postupload-batch"
