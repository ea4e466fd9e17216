"""postupload: post-upload automation for Cloudinary."""
