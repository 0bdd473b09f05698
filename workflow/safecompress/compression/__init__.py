"""Layer 6, compression: the job every method is given, mask updates and SafeCompress's safety
test, one module per method (`magnitude`, `dst`, `safecompress`) and the defenses it is
compared with (`defenses/`)."""
