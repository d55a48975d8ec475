chmod 755 /opt/backup/bin/backup
mkdir -p /srv/data /etc/cron.d
