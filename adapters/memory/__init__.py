"""In-memory versions of the ports the processors see: test doubles that honour the same
contract as their PostgreSQL implementations (``tests/contract/`` runs one suite on both),
so a processor can be tested in milliseconds. The Postgres run is the one that counts."""
