"""The built trainer and sidecar images, run with runc as the Job runs them."""
