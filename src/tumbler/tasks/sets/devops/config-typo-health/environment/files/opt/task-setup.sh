chmod 755 /opt/webapp/bin/*
