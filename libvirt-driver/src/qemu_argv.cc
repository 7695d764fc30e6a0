#include "qemu_argv.h"

#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "error.h"

namespace aggvm::libvirt {
namespace {

using nlohmann::json;

// What a worker does with each option libvirt 9.0 emits.
enum class Action {
  kKeep,      // the machine: the same on every node
  kFlag,      // an option without argument, kept
  kAccel,     // made aggregated
  kObject,    // filtered by qom-type
  kChardev,   // becomes a null chardev of the same id
  kBlockdev,  // becomes a null block node of the same name
  kDevice,    // kept, without its netdev
  kAudiodev,  // becomes the "none" driver (a "wav" one would write a file)
  kSmbios,    // kept unless it reads a file
  kDrop,      // the head's alone (monitors, fds, networks, pid files)
  kDropFlag,
};

const std::map<std::string, Action>& options() {
  static const std::map<std::string, Action> table = {
      {"-name", Action::kKeep},       {"-machine", Action::kKeep},     {"-cpu", Action::kKeep},
      {"-m", Action::kKeep},          {"-overcommit", Action::kKeep},  {"-smp", Action::kKeep},
      {"-numa", Action::kKeep},       {"-uuid", Action::kKeep},        {"-display", Action::kKeep},
      {"-rtc", Action::kKeep},        {"-boot", Action::kKeep},        {"-kernel", Action::kKeep},
      {"-initrd", Action::kKeep},     {"-append", Action::kKeep},      {"-bios", Action::kKeep},
      {"-audiodev", Action::kAudiodev}, {"-msg", Action::kKeep},       {"-global", Action::kKeep},
      {"-smbios", Action::kSmbios},   {"-sandbox", Action::kKeep},     {"-compat", Action::kKeep},
      {"-action", Action::kKeep},     {"-vga", Action::kKeep},         {"-fw_cfg", Action::kDrop},
      {"-S", Action::kDropFlag},      {"-no-user-config", Action::kFlag}, {"-nodefaults", Action::kFlag},
      {"-no-shutdown", Action::kDropFlag}, {"-no-acpi", Action::kFlag},    {"-no-hpet", Action::kFlag},
      {"-no-reboot", Action::kFlag},  {"-nographic", Action::kFlag},
      {"-accel", Action::kAccel},     {"-object", Action::kObject},    {"-chardev", Action::kChardev},
      {"-blockdev", Action::kBlockdev}, {"-device", Action::kDevice},
      {"-mon", Action::kDrop},        {"-qmp", Action::kDrop},         {"-monitor", Action::kDrop},
      {"-netdev", Action::kDrop},     {"-pidfile", Action::kDrop},     {"-add-fd", Action::kDrop},
      {"-serial", Action::kDrop},     {"-incoming", Action::kDrop},
      {"-daemonize", Action::kDropFlag}, {"-enable-fips", Action::kDropFlag},
  };
  return table;
}

// "a=b,c=d" -> the value of key, for QEMU's key=value option syntax.
std::optional<std::string> keyval(const std::string& arg, const std::string& key) {
  size_t pos = 0;
  while (pos <= arg.size()) {
    size_t end = arg.find(',', pos);
    if (end == std::string::npos) end = arg.size();
    const std::string item = arg.substr(pos, end - pos);
    if (item.rfind(key + "=", 0) == 0) return item.substr(key.size() + 1);
    pos = end + 1;
  }
  return std::nullopt;
}

// -object/-device/-blockdev arguments are JSON from libvirt 9.0 on; both
// forms are read, the JSON one is written.
json parse_structured(const std::string& option, const std::string& arg, const char* type_key) {
  if (!arg.empty() && arg.front() == '{') {
    json j = json::parse(arg, nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail("{} '{}': not a JSON object", option, arg);
    return j;
  }
  json j = json::object();
  size_t pos = 0;
  bool first = true;
  while (pos <= arg.size()) {
    size_t end = arg.find(',', pos);
    if (end == std::string::npos) end = arg.size();
    const std::string item = arg.substr(pos, end - pos);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      if (!first) fail("{} '{}': cannot read '{}'", option, arg, item);
      j[type_key] = item;
    } else {
      j[item.substr(0, eq)] = item.substr(eq + 1);
    }
    first = false;
    pos = end + 1;
  }
  return j;
}

std::string accel_for(const std::string& value) {
  const std::string type = value.substr(0, value.find(','));
  if (value.find("aggregate=") != std::string::npos)
    fail("-accel '{}' is already aggregated: leave the accelerator to libvirt", value);
  if (type == "tcg") return value + ",thread=multi,aggregate=" + kClusterObjectId;
  if (type == "kvm") return value + ",kernel-irqchip=off,aggregate=" + kClusterObjectId;
  fail("-accel '{}': an aggregated guest runs under kvm or tcg (domain type 'kvm' or 'qemu')", value);
}

std::string worker_object(const std::string& arg) {
  json obj = parse_structured("-object", arg, "qom-type");
  const std::string type = obj.value("qom-type", "");
  static const std::set<std::string> kept = {"memory-backend-ram", "iothread", "rng-builtin",
                                             "throttle-group"};
  if (kept.count(type)) return obj.dump();
  if (type == "rng-random" || type == "rng-egd")  // entropy comes from node 0's back-end
    return json{{"qom-type", "rng-builtin"}, {"id", obj.value("id", "")}}.dump();
  if (type == "secret" || type == "tls-creds-x509" || type == "tls-creds-psk")
    return "";  // the head's credentials: nothing on a worker uses them
  fail("-object of qom-type '{}' cannot run on a worker (aggregated guests need private "
       "anonymous RAM: memory-backend-ram)", type);
}

std::string worker_blockdev(const std::string& arg) {
  json node = parse_structured("-blockdev", arg, "driver");
  json out = {{"node-name", node.value("node-name", "")}};
  if (out["node-name"].get<std::string>().empty()) fail("-blockdev '{}' has no node-name", arg);
  if (node.contains("read-only")) out["read-only"] = node["read-only"];
  if (node.contains("file") && node["file"].is_string()) {
    // A format layer: raw over the null protocol node below it.
    out["driver"] = "raw";
    out["file"] = node["file"];
  } else {
    out["driver"] = "null-co";
  }
  return out.dump();
}

std::string worker_device(const std::string& arg) {
  if (arg.empty() || arg.front() != '{') {
    if (keyval(arg, "netdev")) fail("-device '{}': use libvirt 9's JSON -device syntax", arg);
    return arg;
  }
  json dev = parse_structured("-device", arg, "driver");
  dev.erase("netdev");  // the NIC's traffic goes through node 0's back-end
  return dev.dump();
}

}  // namespace

std::string domain_name(const std::vector<std::string>& argv) {
  for (size_t i = 1; i + 1 < argv.size(); ++i)
    if (argv[i] == "-name") {
      if (auto guest = keyval(argv[i + 1], "guest")) return *guest;
      return argv[i + 1].substr(0, argv[i + 1].find(','));
    }
  return "";
}

bool is_probe(const std::vector<std::string>& argv) {
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "-version" || a == "--version" || a == "-help" || a == "--help" || a == "-h") return true;
    if ((a == "-machine" || a == "-M") && i + 1 < argv.size() &&
        argv[i + 1].substr(0, argv[i + 1].find(',')) == "none")
      return true;
  }
  return domain_name(argv).empty();
}

std::vector<std::string> cluster_args(const ClusterSpec& spec, uint16_t node, const std::string& secret_file) {
  json secret = {{"qom-type", "secret"}, {"id", kSecretObjectId}, {"file", secret_file}, {"format", "raw"}};
  json cluster = {{"qom-type", "aggvm-cluster"},
                  {"id", kClusterObjectId},
                  {"node", node},
                  {"secret", kSecretObjectId},
                  {"cluster-name", spec.uuid.empty() ? spec.domain : spec.uuid},
                  {"timeout", spec.timeout_ms},
                  {"addresses", spec.fabric_addresses()},
                  {"numa-node-hosts", spec.cell_hosts()}};
  if (spec.cpu_latency_us) cluster["cpu-latency-us"] = *spec.cpu_latency_us;
  if (spec.dma_prefetch) cluster["dma-prefetch"] = *spec.dma_prefetch;
  return {"-object", secret.dump(), "-object", cluster.dump()};
}

std::vector<std::string> head_command(const std::vector<std::string>& argv, const std::string& qemu,
                                      const ClusterSpec& spec) {
  std::vector<std::string> out{qemu};
  bool accel = false;
  for (size_t i = 1; i < argv.size(); ++i) {
    out.push_back(argv[i]);
    if (argv[i] == "-accel" && i + 1 < argv.size()) {
      out.push_back(accel_for(argv[++i]));
      accel = true;
    }
  }
  if (!accel) fail("libvirt's command line has no -accel: cannot make it aggregated");
  auto extra = cluster_args(spec, 0, spec.secret_file);
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

std::vector<std::string> worker_command(const std::vector<std::string>& argv, const std::string& qemu,
                                        const ClusterSpec& spec, uint16_t node, const std::string& secret_file) {
  if (node == 0 || node >= spec.hosts.size())
    fail("worker node {} out of range (1..{})", node, spec.hosts.size() - 1);
  std::vector<std::string> out{qemu};
  bool accel = false;
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string& opt = argv[i];
    auto it = options().find(opt);
    if (it == options().end()) fail("option '{}' of the domain's command line cannot run on a worker", opt);
    const Action action = it->second;
    if (action == Action::kFlag) { out.push_back(opt); continue; }
    if (action == Action::kDropFlag) continue;
    if (i + 1 >= argv.size()) fail("option '{}' has no argument", opt);
    const std::string& arg = argv[++i];
    switch (action) {
      case Action::kKeep: out.insert(out.end(), {opt, arg}); break;
      case Action::kAccel: out.insert(out.end(), {opt, accel_for(arg)}); accel = true; break;
      case Action::kObject:
        if (auto o = worker_object(arg); !o.empty()) out.insert(out.end(), {opt, o});
        break;
      case Action::kChardev: {
        const size_t comma = arg.find(',');
        auto id = keyval(arg, "id");
        if (comma == std::string::npos || !id) fail("-chardev '{}' has no id", arg);
        out.insert(out.end(), {opt, "null,id=" + *id});
        break;
      }
      case Action::kBlockdev: out.insert(out.end(), {opt, worker_blockdev(arg)}); break;
      case Action::kDevice: out.insert(out.end(), {opt, worker_device(arg)}); break;
      case Action::kAudiodev: {
        json dev = parse_structured("-audiodev", arg, "driver");
        const std::string id = dev.value("id", "");
        if (id.empty()) fail("-audiodev '{}' has no id", arg);
        out.insert(out.end(), {opt, json{{"id", id}, {"driver", "none"}}.dump()});
        break;
      }
      case Action::kSmbios:
        if (keyval(arg, "file")) fail("-smbios '{}' reads a file: not run on a worker", arg);
        out.insert(out.end(), {opt, arg});
        break;
      default: break;  // kDrop
    }
  }
  if (!accel) fail("libvirt's command line has no -accel: cannot make it aggregated");
  auto extra = cluster_args(spec, node, secret_file);
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

}  // namespace aggvm::libvirt
