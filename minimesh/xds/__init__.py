"""xDS v3 shared by the push server (`minimesh.pilot`) and the proxy: resource types and names, the ADS
client (gRPC over `h2`, light enough for the proxy's RSS budget) and its pure protocol state machine."""
