"""Promotion: an image and its whole record from a publisher's registry and instance to a consumer's."""
