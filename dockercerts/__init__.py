"""dockercerts: talk to container registries with Docker's certs.d TLS material."""
