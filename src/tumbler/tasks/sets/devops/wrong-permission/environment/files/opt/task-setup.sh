useradd --create-home --shell /bin/bash app
chmod 644 /opt/report/bin/make-report
mkdir -p /srv/reports
chmod 755 /srv/reports
