// Small Kafka client helper for deploy/kafka/local-kafka.
//
// Run with the fetched jar cache on the class path (Java 17 source launcher):
//   java -cp "$CACHE/*" LocalKafkaAdmin.java <command> <bootstrap> ...
//
// It exists because org.apache.kafka:kafka-tools (TopicCommand, the console
// producer/consumer) is not published on Maven Central for every Kafka
// release, while kafka-clients always is.
//
// Commands (diagnostics on stderr, data on stdout, exit 0 on success):
//   wait    BOOTSTRAP SECONDS            until the cluster answers a request
//   topics  BOOTSTRAP NAME:PARTITIONS[:compact] ...   create missing topics
//                                        (waits up to 30 s for the cluster first)
//   list    BOOTSTRAP                    topic names, one per line
//   produce BOOTSTRAP TOPIC              stdin lines -> records ("key<TAB>value"
//                                        gives a keyed record)
//   consume BOOTSTRAP TOPIC MAX [SECONDS]  print up to MAX values from the
//                                        beginning (no consumer group)

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class LocalKafkaAdmin {

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            usage();
        }
        String cmd = args[0];
        String bootstrap = args[1];
        int rc;
        switch (cmd) {
            case "wait" -> rc = waitReady(bootstrap, args.length > 2 ? Integer.parseInt(args[2]) : 60);
            case "topics" -> rc = topics(bootstrap, List.of(args).subList(2, args.length));
            case "list" -> rc = list(bootstrap);
            case "produce" -> rc = produce(bootstrap, arg(args, 2));
            case "consume" -> rc = consume(bootstrap, arg(args, 2), Integer.parseInt(arg(args, 3)),
                    args.length > 4 ? Integer.parseInt(args[4]) : 30);
            default -> { usage(); rc = 2; }
        }
        System.exit(rc);
    }

    private static String arg(String[] args, int i) {
        if (args.length <= i) {
            usage();
        }
        return args[i];
    }

    private static void usage() {
        System.err.println("usage: LocalKafkaAdmin wait|topics|list|produce|consume BOOTSTRAP ...");
        System.exit(2);
    }

    private static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "local-kafka-admin");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        return Admin.create(p);
    }

    private static int waitReady(String bootstrap, int seconds) {
        Admin admin = admin(bootstrap);
        try {
            return awaitCluster(admin, bootstrap, seconds) ? 0 : 1;
        } finally {
            // Do not wait for calls still pending against a dead broker.
            admin.close(Duration.ZERO);
        }
    }

    /** True once the cluster has a controller and serves topic metadata. */
    private static boolean awaitCluster(Admin admin, String bootstrap, int seconds) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        Exception last = null;
        while (true) {
            long leftMs = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
            if (leftMs <= 0) {
                break;
            }
            long stepMs = Math.min(5000, Math.max(100, leftMs));
            try {
                admin.describeCluster().controller().get(stepMs, TimeUnit.MILLISECONDS);
                admin.listTopics().names().get(stepMs, TimeUnit.MILLISECONDS);
                return true;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            } catch (Exception e) {
                last = e;
                try {
                    Thread.sleep(200);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    return false;
                }
            }
        }
        System.err.println("local-kafka: broker at " + bootstrap + " not ready after " + seconds + "s: " + last);
        return false;
    }

    private static int topics(String bootstrap, List<String> specs) throws Exception {
        List<NewTopic> wanted = new ArrayList<>();
        for (String spec : specs) {
            String[] parts = spec.split(":");
            if (parts.length < 2 || parts.length > 3 || parts[0].isEmpty()
                    || (parts.length == 3 && !parts[2].equals("compact"))) {
                System.err.println("local-kafka: bad topic spec '" + spec + "' (want NAME:PARTITIONS[:compact])");
                return 2;
            }
            int partitions;
            try {
                partitions = Integer.parseInt(parts[1]);
            } catch (NumberFormatException e) {
                partitions = -1;
            }
            if (partitions < 1) {
                System.err.println("local-kafka: bad partition count in '" + spec + "'");
                return 2;
            }
            NewTopic t = new NewTopic(parts[0], partitions, (short) 1);
            if (parts.length == 3) {
                t.configs(Map.of("cleanup.policy", "compact"));
            }
            wanted.add(t);
        }
        if (wanted.isEmpty()) {
            return 0;
        }
        int rc = 0;
        Admin admin = admin(bootstrap);
        try {
            if (!awaitCluster(admin, bootstrap, 30)) {
                return 1;
            }
            var result = admin.createTopics(wanted, new CreateTopicsOptions().timeoutMs(30000));
            for (NewTopic t : wanted) {
                try {
                    result.values().get(t.name()).get();
                    System.err.println("local-kafka: created topic " + t.name() + " (" + t.numPartitions()
                            + " partitions" + (t.configs() == null ? "" : ", compact") + ")");
                } catch (ExecutionException e) {
                    if (e.getCause() instanceof TopicExistsException) {
                        TopicDescription d = admin.describeTopics(Set.of(t.name()))
                                .allTopicNames().get().get(t.name());
                        if (d.partitions().size() != t.numPartitions()) {
                            System.err.println("local-kafka: warning: topic " + t.name() + " exists with "
                                    + d.partitions().size() + " partitions, wanted " + t.numPartitions());
                        }
                    } else {
                        System.err.println("local-kafka: cannot create topic " + t.name() + ": " + e.getCause());
                        rc = 1;
                    }
                }
            }
        } finally {
            admin.close(Duration.ofSeconds(5));
        }
        return rc;
    }

    private static int list(String bootstrap) throws Exception {
        try (Admin admin = admin(bootstrap)) {
            admin.listTopics().names().get().stream().sorted().forEach(System.out::println);
        }
        return 0;
    }

    private static int produce(String bootstrap, String topic) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        int n = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p);
             BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            String line;
            while ((line = in.readLine()) != null) {
                int tab = line.indexOf('\t');
                ProducerRecord<String, String> rec = tab < 0
                        ? new ProducerRecord<>(topic, line)
                        : new ProducerRecord<>(topic, line.substring(0, tab), line.substring(tab + 1));
                producer.send(rec).get(30, TimeUnit.SECONDS);
                n++;
            }
        }
        System.err.println("local-kafka: produced " + n + " record(s) to " + topic);
        return 0;
    }

    private static int consume(String bootstrap, String topic, int max, int seconds) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        int n = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : consumer.partitionsFor(topic, Duration.ofSeconds(seconds))) {
                tps.add(new TopicPartition(pi.topic(), pi.partition()));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            while (n < max && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    System.out.println(r.value());
                    if (++n >= max) {
                        break;
                    }
                }
            }
        }
        System.out.flush();
        if (n < max) {
            System.err.println("local-kafka: got " + n + " of " + max + " record(s) from " + topic
                    + " within " + seconds + "s");
            return 1;
        }
        return 0;
    }
}
