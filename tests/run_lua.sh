#!/bin/sh
# Runs a test command (kept as one place to adjust the test environment).
exec "$@"
