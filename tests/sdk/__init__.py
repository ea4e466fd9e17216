"""What the Cloudinary SDK's own tests import from their `test` package, written here (the SDK's
source distribution ships its test_*.py files but not these helpers): tests/test_sdk_live.py copies
these beside the SDK's files and runs them against the emulator."""
