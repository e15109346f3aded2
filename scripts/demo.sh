#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/muros-had ./cmd/muros-had
echo "demo: not yet available"
