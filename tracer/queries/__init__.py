"""Read-side questions about stored runs; each module answers one."""
