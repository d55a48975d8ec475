useradd --shell /bin/bash alice
chown root:root /home/alice/.ssh/authorized_keys
chmod 777 /home/alice /home/alice/.ssh
chmod 666 /home/alice/.ssh/authorized_keys
