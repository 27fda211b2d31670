#!/bin/sh
echo "hello from $(cat /etc/hostname 2>/dev/null || echo kiln)"
echo "greeter ${VERSION:-1.0}"
