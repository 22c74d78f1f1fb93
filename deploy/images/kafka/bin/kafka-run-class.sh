#!/bin/sh
# kafka-run-class.sh MAIN [ARGS...]: runs one of Kafka's Java programs on the image's jars.
# KAFKA_HEAP_OPTS, KAFKA_OPTS and KAFKA_LOG4J_OPTS work as in Apache Kafka's own script.
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
  ${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.properties} \
  ${KAFKA_OPTS:-} -cp '/opt/kafka/libs/*' "$@"
