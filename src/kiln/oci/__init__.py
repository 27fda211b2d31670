"""OCI image data: media types, descriptors, manifests and configs, layer tars."""
