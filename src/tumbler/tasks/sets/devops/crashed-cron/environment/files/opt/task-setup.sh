chmod 755 /opt/jobs/rotate-uploads.sh
mkdir -p /srv/uploads /srv/archive
for i in 1 2 3 4; do echo "upload $i" > /srv/uploads/batch-$i.done; done
echo partial > /srv/uploads/batch-5.part
for i in 1 2 3; do /bin/sh -c '/opt/jobs/rotate-uploads.sh >> /var/log/rotate-uploads.log 2>&1' || true; done
