# Never finishes: lets the harness prove its timeout works.
echo "hanging on purpose"
exec sleep 100000
