"""The thin napari layer: reader/writer hooks and widgets that translate between
napari layers and the core. Nothing here computes; everything here may import napari."""
