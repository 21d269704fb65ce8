"""Stage 6: the mesh CA, workload identities (SPIFFE), certificates for sidecars (SDS), mTLS policy."""
