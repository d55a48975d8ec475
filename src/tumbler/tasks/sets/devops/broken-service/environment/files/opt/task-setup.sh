chmod 755 /opt/app/bin/start-app
mkdir -p /var/lib/app
/opt/app/bin/start-app || true
