#!/bin/sh
echo "$(cat /app/greeting.txt) ($(cat /app/greeting.size) bytes, built with kiln)"
