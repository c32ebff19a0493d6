#!/bin/sh
# Container entry point of the telenet hub: take the PostgreSQL password from a secret file (never from the
# image or the compose file), bring the schema up to date, then run the telenet command (default: serve).
set -eu

if [ -n "${PGPASSWORD_FILE:-}" ]; then
    # asyncpg reads PGPASSWORD when TELENET_DATABASE_URL carries no password.
    PGPASSWORD="$(cat "$PGPASSWORD_FILE")"
    export PGPASSWORD
fi

# TMPDIR sits on the data volume so that received DICOM files are renamed into place, not copied.
mkdir -p "${TMPDIR:-/tmp}"

telenet db upgrade
exec telenet "$@"
