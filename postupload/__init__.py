"""postupload: post-upload automation for Cloudinary."""

QUEUE_NAME = "postupload"
