"""edge_export package."""
