chmod 755 /opt/queue/bin/worker
mkdir -p /var/lib/queue/jobs
for i in 1 2 3 4 5; do echo "{\"job\": $i}" > /var/lib/queue/jobs/job-$i.json; done
echo 31337 > /var/lib/queue/worker.lock
