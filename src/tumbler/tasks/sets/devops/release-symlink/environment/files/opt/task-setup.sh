chmod 755 /opt/site/releases/*/bin/selftest
ln -s /opt/site/releases/v1.6.0 /opt/site/current
