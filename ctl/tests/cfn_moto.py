#!/usr/bin/env python3
"""cfn_moto.py URL: deploy the non-Transit-Gateway part of cfn/cluster.yaml into moto's
CloudFormation (the project's AWS emulator, scripts/aws-emulator) and verify what it created.

    python3 scripts/aws-emulator 5599 &
    python3 ctl/tests/cfn_moto.py http://127.0.0.1:5599 [-v] [--template PATH]

(-v prints every check; --template checks another copy of the template, e.g. a modified one.)

The stack is made from cfn/cluster.yaml itself, never from a copy: the template is loaded
(CloudFormation short tags turned into their long form), then derived step by step. Every step
that works around moto is proven first, each run, by a probe stack made of the template's own
resources: variant A (without the step) must fail or misbehave the way the step says, variant B
(with it) must deploy. Then the derived template is deployed with CreateStack and every
resource is compared, with describe calls, against the values the template gives (its
expressions evaluated with the stack's parameters and the created resources' ids).

The steps (each reported with its evidence):
  * conditions: Fn::If is replaced by its branch and resources/outputs whose Condition is false
    are left out (moto fails on an Fn::If -> AWS::NoValue list item); the template is deployed
    three times, as one zone (the defaults), with RouterHa=true (second router, second subnet)
    and with Flood=evpn and RouterHa=true (no Transit Gateway chain, BGP rules, the route
    reflectors in the user data);
  * scope: the Transit Gateway part (AWS::EC2::TransitGateway*) is dropped, with the DependsOn
    entries and outputs that name it; the probe reports what moto does with it;
  * SSM-typed parameters: their Default is removed (moto resolves the default path even when a
    value is passed, and fails when it does not exist);
  * rules of port-less protocols (the IGMP rule, "2") get FromPort/ToPort -1 (moto's
    CloudFormation fails without them; AWS treats them as all ports anyway);
  * AWS::LanguageExtensions: the Transform is removed and Fn::ForEach expanded here;
  * AWS::EC2::Instance is dropped (moto needs ImageId on the instance itself: a probe with the
    launch template's ImageId copied onto the instance deploys, CreationPolicy ignored); a GetAtt
    of its AvailabilityZone becomes the zone of its subnet;
  * AWS::SecretsManager::Secret is dropped (no moto model: skipped silently) and created by
    this checker through the Secrets Manager API from the template's own properties;
  * {{resolve:secretsmanager:...}} dynamic references are resolved here (moto keeps them as text);
  * AWS::RDS::DBParameterGroup is dropped (moto ignores its name, and its Ref crashes the
    DBInstance) and created here through the RDS API from the template's own properties.

Checked with describe calls: the stack's resources and outputs; security groups (names,
descriptions, VPC, tags, ingress and egress rules); the overlay routes in every RouteTableIds
table; the router ENI; EFS (encryption, throughput mode and rate, tags) and its mount target
(subnet, groups); the DB subnet group; the DB instance (engine, version, class, storage, zone,
parameter group, subnet group, backups, master user from the secret, tags); the parameter
group's family and parameters; the secrets (name, description, tags, generated password); IAM
roles (trust, inline policies, tags) and instance profiles; launch templates (image, type,
profile, groups, metadata options, user data byte for byte); the hosts' Auto Scaling group and
its instances. What moto is known to drop (rule descriptions, the ENI's GroupSet and
SourceDestCheck, ...) is reported as a moto gap, not a failure; any other difference fails.

Only the emulator at URL (a loopback address) is contacted; the stack, its VPC and the probes'
leftovers stay in the emulator under names unique to the run. Exit status: 0 when every check
passes, 1 on any mismatch or failure, 2 on bad usage.
"""

import base64
import copy
import hashlib
import json
import os
import re
import sys
import time
import traceback
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True

REGION = "eu-west-1"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "testing"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "cfn", "cluster.yaml")
STACK_TIMEOUT = 20.0  # seconds; moto creates a stack within the CreateStack call

# The site-specific parameters (the lab's VPC layout); the others keep the template's defaults.
VPC_CIDR = "10.0.0.0/16"
SUBNET_CIDR = "10.0.0.0/22"
SECOND_SUBNET_CIDR = "10.0.4.0/22"
SECOND_OVERLAY_SUBNET_CIDR = "10.0.8.0/22"  # RouterHa's second overlay subnet (the second zone)
ACCESS_CIDR = "203.0.113.0/24"
PACKAGE_URL = "https://example.invalid/overlayd_0.1.0-1_amd64.deb"  # never fetched: no instance runs
IMAGE_PARAMETER_PATHS = ("/aws/service/ami-amazon-linux-latest",)

PSEUDO_URL_SUFFIX = "amazonaws.com"
PSEUDO_PARTITION = "aws"


def die(msg, code=1):
    sys.stderr.write("cfn_moto: %s\n" % msg)
    sys.exit(code)


# --------------------------------------------------------------------------------------------
# the template: YAML with CloudFormation's short tags


def load_template(path):
    try:
        import yaml
    except ImportError:
        die("PyYAML is missing (pip install -r scripts/requirements-ci.txt: cfn-lint brings it)")

    class Loader(yaml.SafeLoader):
        pass

    def construct(loader, suffix, node):
        tag = node.tag[1:]
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if tag == "Ref":
            return {"Ref": value}
        if tag == "Condition":
            return {"Condition": value}
        if tag == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {"Fn::" + tag: value}

    Loader.add_multi_constructor("!", construct)
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=Loader)


# --------------------------------------------------------------------------------------------
# intrinsic functions: references, substitution, evaluation

SUB_TOKEN = re.compile(r"\$\{(!?)([^}]*)\}")


class Unresolved(Exception):
    """An expression needs a value that is not known (yet)."""


def sub_parts(value):
    """(template string, variable map) of a Fn::Sub."""
    if isinstance(value, list):
        return value[0], (value[1] if len(value) > 1 else {})
    return value, {}


def refs_in(x, local=()):
    """Names referenced by x: Ref, Fn::GetAtt (the resource) and Fn::Sub tokens."""
    out = set()
    if isinstance(x, list):
        for v in x:
            out |= refs_in(v, local)
    elif isinstance(x, dict):
        if len(x) == 1:
            ((k, v),) = x.items()
            if k == "Ref" and isinstance(v, str):
                return set() if v in local else {v}
            if k == "Fn::GetAtt":
                name = v[0] if isinstance(v, list) else str(v).split(".", 1)[0]
                return set() if name in local else {name}
            if k == "Fn::Sub":
                s, variables = sub_parts(v)
                names = set(local) | set(variables)
                for bang, token in SUB_TOKEN.findall(s if isinstance(s, str) else ""):
                    if not bang:
                        name = token.split(".", 1)[0] if not token.startswith("AWS::") else token
                        if name not in names:
                            out.add(name)
                return out | refs_in(variables, local)
            if k.startswith("Fn::ForEach::") and isinstance(v, list) and len(v) == 3:
                return refs_in(v[1], local) | refs_in(v[2], tuple(local) + (v[0],))
        for k, v in x.items():
            if k.startswith("Fn::ForEach::") and isinstance(v, list) and len(v) == 3:
                out |= refs_in(v[1], local) | refs_in(v[2], tuple(local) + (v[0],))
            else:
                out |= refs_in(v, local)
    return out


def substitute(x, refs=None, getatts=None):
    """x with Ref N -> refs[N] and GetAtt N.A -> getatts[(N, A)], also inside Fn::Sub strings."""
    refs = refs or {}
    getatts = getatts or {}
    if isinstance(x, list):
        return [substitute(v, refs, getatts) for v in x]
    if not isinstance(x, dict):
        return x
    if len(x) == 1:
        ((k, v),) = x.items()
        if k == "Ref" and isinstance(v, str) and v in refs:
            return refs[v]
        if k == "Fn::GetAtt":
            name, attr = (v[0], v[1]) if isinstance(v, list) else str(v).split(".", 1)
            if (name, attr) in getatts:
                return getatts[(name, attr)]
        if k == "Fn::Sub":
            s, variables = sub_parts(v)

            def rep(m):
                bang, token = m.group(1), m.group(2)
                if bang or token in variables:
                    return m.group(0)
                if token in refs and isinstance(refs[token], str):
                    return refs[token].replace("${", "${!")
                if "." in token and not token.startswith("AWS::"):
                    name, attr = token.split(".", 1)
                    if (name, attr) in getatts:
                        return str(getatts[(name, attr)]).replace("${", "${!")
                return m.group(0)

            s = SUB_TOKEN.sub(rep, s) if isinstance(s, str) else s
            variables = substitute(variables, refs, getatts)
            return {"Fn::Sub": [s, variables] if isinstance(v, list) else s}
    return {k: substitute(v, refs, getatts) for k, v in x.items()}


NO_VALUE = object()


class Env:
    """What a stack's expressions evaluate against: parameters, pseudo parameters, conditions,
    the resources' Refs and a GetAtt resolver."""

    def __init__(self, params, pseudo, conditions, refs=None, getatt=None):
        self.values = dict(pseudo)
        self.values.update(params)
        self.conditions = conditions or {}
        self.refs = refs or {}
        self.getatt_fn = getatt

    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.values:
            return self.values[name]
        if name in self.refs:
            return self.refs[name]
        raise Unresolved("Ref " + name)

    def getatt(self, name, attr):
        if self.getatt_fn is None:
            raise Unresolved("GetAtt %s.%s" % (name, attr))
        return self.getatt_fn(name, attr)

    def condition(self, name):
        if name not in self.conditions:
            raise Unresolved("Condition " + name)
        return bool(evaluate(self.conditions[name], self))


def scalar_str(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(scalar_str(i) for i in v)
    return str(v)


def evaluate(x, env, local=None):
    local = local or {}
    if isinstance(x, list):
        return [v for v in (evaluate(i, env, local) for i in x) if v is not NO_VALUE]
    if not isinstance(x, dict):
        return x
    if len(x) == 1:
        ((k, v),) = x.items()
        ev = lambda y: evaluate(y, env, local)  # noqa: E731
        if k == "Ref":
            return local[v] if v in local else env.ref(v)
        if k == "Fn::GetAtt":
            name, attr = (v[0], v[1]) if isinstance(v, list) else str(v).split(".", 1)
            return env.getatt(name, ev(attr))
        if k == "Fn::Sub":
            s, variables = sub_parts(v)
            values = {n: ev(e) for n, e in variables.items()}

            def rep(m):
                bang, token = m.group(1), m.group(2)
                if bang:
                    return "${" + token + "}"
                if token in values:
                    return scalar_str(values[token])
                if token in local:
                    return scalar_str(local[token])
                if "." in token and not token.startswith("AWS::"):
                    name, attr = token.split(".", 1)
                    return scalar_str(env.getatt(name, attr))
                return scalar_str(env.ref(token))

            return SUB_TOKEN.sub(rep, ev(s))
        if k == "Fn::Join":
            sep, items = v
            return ev(sep).join(scalar_str(i) for i in ev(items))
        if k == "Fn::Select":
            index, items = v
            return ev(items)[int(ev(index))]
        if k == "Fn::Split":
            sep, s = v
            return ev(s).split(ev(sep))
        if k == "Fn::Base64":
            return base64.b64encode(scalar_str(ev(v)).encode()).decode()
        if k == "Fn::If":
            cond, yes, no = v
            return ev(yes) if env.condition(cond) else ev(no)
        if k == "Fn::Equals":
            a, b = (ev(i) for i in v)
            return scalar_str(a) == scalar_str(b)
        if k == "Fn::Not":
            return not ev(v[0])
        if k == "Fn::And":
            return all(ev(i) for i in v)
        if k == "Fn::Or":
            return any(ev(i) for i in v)
        if k == "Condition":
            return env.condition(v)
        if k == "Fn::GetAZs":
            raise Unresolved(k)
        if k.startswith("Fn::"):
            raise Unresolved(k)
    out = {}
    for k, v in x.items():
        r = evaluate(v, env, local)
        if r is not NO_VALUE:
            out[k] = r
    return out


# --------------------------------------------------------------------------------------------
# comparison helpers


def norm(v):
    """A canonical form for comparing template values with describe output."""
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return int(v) if float(v).is_integer() else float(v)
    if isinstance(v, str):
        low = v.lower()
        if low in ("true", "false"):
            return low == "true"
        if re.fullmatch(r"-?\d+", v):
            return int(v)
        if re.fullmatch(r"-?\d+\.\d+", v):
            f = float(v)
            return int(f) if f.is_integer() else f
        return v
    if isinstance(v, list):
        return [norm(i) for i in v]
    if isinstance(v, dict):
        return {k: norm(i) for k, i in v.items()}
    return v


def same(a, b):
    return norm(a) == norm(b)


def tags_dict(tags):
    return {t["Key"]: t["Value"] for t in tags or []}


def short(v, n=160):
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= n else s[: n - 3] + "..."


class Report:
    def __init__(self, verbose=False):
        self.verbose = verbose
        self.passed = 0
        self.failures = []  # (where, message)
        self.gaps = []  # (where, message): moto limits seen in the created resources
        self.notes = []
        self.per_resource = {}

    def _count(self, where):
        self.per_resource.setdefault(where, [0, 0, 0])
        return self.per_resource[where]

    def ok(self, where, what):
        self.passed += 1
        self._count(where)[0] += 1
        if self.verbose:
            print("    ok   %s: %s" % (where, what))

    def fail(self, where, what):
        self.failures.append((where, what))
        self._count(where)[1] += 1
        print("    FAIL %s: %s" % (where, what))

    def gap(self, where, what):
        self.gaps.append((where, what))
        self._count(where)[2] += 1
        if self.verbose:
            print("    gap  %s: %s" % (where, what))

    def eq(self, where, what, expected, actual):
        if same(expected, actual):
            self.ok(where, "%s = %s" % (what, short(actual)))
            return True
        self.fail(where, "%s: template says %s, moto has %s" % (what, short(expected), short(actual)))
        return False

    def eq_or_gap(self, where, what, expected, actual, gap_value, gap_text):
        """Equal: a pass. The value moto is known to produce instead: a gap. Else a failure."""
        if same(expected, actual):
            self.ok(where, "%s = %s" % (what, short(actual)))
        elif same(gap_value, actual) if not callable(gap_value) else gap_value(actual):
            self.gap(where, "%s: %s (template: %s, moto: %s)" % (what, gap_text, short(expected), short(actual)))
        else:
            self.fail(where, "%s: template says %s, moto has %s" % (what, short(expected), short(actual)))

    def tags(self, where, expected_tags, actual_tags):
        exp, act = tags_dict(expected_tags), tags_dict(actual_tags)
        missing = {k: v for k, v in exp.items() if act.get(k) != v}
        if missing:
            self.fail(where, "tags %s missing or different (moto has %s)" % (short(missing), short(act)))
        else:
            self.ok(where, "tags %s" % short(exp))


class ClaimError(Exception):
    """moto did not behave as a derivation step says: the step would be unjustified."""


class DeployError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# the emulator


def error_text(e):
    from botocore.exceptions import ClientError
    from botocore.parsers import ResponseParserError

    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        return "%s: %s" % (err.get("Code", "?"), err.get("Message", ""))
    if isinstance(e, ResponseParserError) and "500 Internal Server Error" in str(e):
        return ("HTTP 500 with an HTML page: an unhandled Python exception inside moto "
                "(the traceback is on the emulator's stderr)")
    return "%s: %s" % (type(e).__name__, short(str(e), 300))


class Aws:
    def __init__(self, url):
        import boto3
        from botocore.config import Config

        self.url = url
        session = boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
        )
        config = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60)
        self._clients = {}
        self._session = session
        self._config = config

    def __getattr__(self, service):
        if service.startswith("_"):
            raise AttributeError(service)
        name = service.replace("_", "-")
        if name not in self._clients:
            self._clients[name] = self._session.client(name, endpoint_url=self.url, config=self._config)
        return self._clients[name]

    def shim(self, path, method="GET"):
        """A shim control endpoint (JSON), or None when the emulator has no shim."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with opener.open(req, timeout=5) as r:
                return json.loads(r.read().decode())
        except Exception:
            return None


class Outcome:
    def __init__(self, name):
        self.name = name
        self.error = None  # CreateStack (or wait) failure
        self.status = None
        self.resources = {}  # logical id -> (type, physical id, status)
        self.unnamed = 0  # rows moto lists without a logical id (resources it skipped)
        self.outputs = {}
        self.stack_id = None
        self.seconds = 0.0
        self.events = []

    @property
    def complete(self):
        return self.error is None and self.status == "CREATE_COMPLETE"

    def summary(self):
        if self.error:
            return "CreateStack failed: " + self.error
        return "%s (%d resources)" % (self.status, len(self.resources))


def deploy(aws, name, template, params, progress=False):
    """CreateStack, wait for the end, read resources, outputs and events."""
    out = Outcome(name)
    declared = template.get("Parameters", {})
    plist = [{"ParameterKey": k, "ParameterValue": scalar_str(v)} for k, v in params.items() if k in declared]
    t0 = time.monotonic()
    try:
        r = aws.cloudformation.create_stack(
            StackName=name, TemplateBody=json.dumps(template, separators=(",", ":"), default=str), Parameters=plist
        )
        out.stack_id = r["StackId"]
    except Exception as e:
        out.error = error_text(e)
        out.seconds = time.monotonic() - t0
        return out
    last = None
    while True:
        try:
            s = aws.cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        except Exception as e:
            out.error = "DescribeStacks: " + error_text(e)
            break
        out.status = s["StackStatus"]
        out.outputs = {o["OutputKey"]: o.get("OutputValue") for o in s.get("Outputs") or []}
        if progress and out.status != last:
            print("  stack %s: %s (%.1f s)" % (name, out.status, time.monotonic() - t0))
            last = out.status
        if not out.status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() - t0 > STACK_TIMEOUT:
            out.error = "still %s after %.0f s" % (out.status, STACK_TIMEOUT)
            break
        time.sleep(0.25)
    out.seconds = time.monotonic() - t0
    try:
        paginator = aws.cloudformation.get_paginator("list_stack_resources")
        for page in paginator.paginate(StackName=name):
            for r in page["StackResourceSummaries"]:
                if r.get("LogicalResourceId"):
                    out.resources[r["LogicalResourceId"]] = (
                        r.get("ResourceType"), r.get("PhysicalResourceId"), r.get("ResourceStatus"))
                else:
                    out.unnamed += 1
    except Exception as e:
        if out.error is None:
            out.error = "ListStackResources: " + error_text(e)
    try:
        out.events = aws.cloudformation.describe_stack_events(StackName=name)["StackEvents"]
    except Exception:
        pass
    return out


def delete_stack(aws, name):
    try:
        aws.cloudformation.delete_stack(StackName=name)
    except Exception:
        pass


# --------------------------------------------------------------------------------------------
# parameters


def validate_params(template, params):
    """The parameter constraints (moto checks none): every given or default value."""
    errors = []
    for name, p in template["Parameters"].items():
        if name not in params and "Default" not in p:
            errors.append("%s: no value and no default" % name)
            continue
        v = params.get(name, p.get("Default"))
        ptype = p.get("Type", "String")
        items = v if isinstance(v, list) else (str(v).split(",") if ptype == "CommaDelimitedList" else [v])
        for item in items:
            s = scalar_str(item)
            if "AllowedPattern" in p and not re.fullmatch(p["AllowedPattern"], s):
                errors.append("%s=%r does not match %s" % (name, s, p["AllowedPattern"]))
            if "AllowedValues" in p and s not in [scalar_str(a) for a in p["AllowedValues"]]:
                errors.append("%s=%r is not one of %s" % (name, s, p["AllowedValues"]))
            if ptype == "Number":
                n = float(s)
                if "MinValue" in p and n < float(p["MinValue"]) or "MaxValue" in p and n > float(p["MaxValue"]):
                    errors.append("%s=%s is outside [%s, %s]" % (name, s, p.get("MinValue"), p.get("MaxValue")))
            if "MaxLength" in p and len(s) > int(p["MaxLength"]) or "MinLength" in p and len(s) < int(p["MinLength"]):
                errors.append("%s=%r has a length outside [%s, %s]" % (name, s, p.get("MinLength"), p.get("MaxLength")))
    return errors


class Site:
    """The prerequisites (VPC, subnets, route tables) and the parameter sets."""

    def __init__(self, aws, template, run):
        self.aws = aws
        self.template = template
        self.run = run
        self.account = aws.sts.get_caller_identity()["Account"]
        ec2 = aws.ec2
        zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]
                 if z.get("State") == "available"]
        if len(zones) < 2:
            raise DeployError("the emulator has fewer than two availability zones in %s" % REGION)
        tag = [{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "cfn-moto-" + run}]}]
        self.vpc = ec2.create_vpc(CidrBlock=VPC_CIDR, TagSpecifications=tag)["Vpc"]["VpcId"]
        self.subnet = ec2.create_subnet(VpcId=self.vpc, CidrBlock=SUBNET_CIDR, AvailabilityZone=zones[0])["Subnet"]
        self.second = ec2.create_subnet(VpcId=self.vpc, CidrBlock=SECOND_SUBNET_CIDR,
                                        AvailabilityZone=zones[1])["Subnet"]
        self.overlay2 = ec2.create_subnet(VpcId=self.vpc, CidrBlock=SECOND_OVERLAY_SUBNET_CIDR,
                                          AvailabilityZone=zones[1])["Subnet"]
        self.tables = [ec2.create_route_table(VpcId=self.vpc)["RouteTable"]["RouteTableId"] for _ in range(2)]
        self.ha_tables = [ec2.create_route_table(VpcId=self.vpc)["RouteTable"]["RouteTableId"] for _ in range(2)]
        self.evpn_tables = [ec2.create_route_table(VpcId=self.vpc)["RouteTable"]["RouteTableId"] for _ in range(2)]
        self.probe_table = ec2.create_route_table(VpcId=self.vpc)["RouteTable"]["RouteTableId"]
        self.image_path, self.image_id = self._image()

    def _image(self):
        pattern = self.template["Parameters"]["ImageId"].get("AllowedPattern", ".*")
        ssm = self.aws.ssm
        for path in IMAGE_PARAMETER_PATHS:
            kwargs = {"Path": path, "Recursive": True}
            while True:
                page = ssm.get_parameters_by_path(**kwargs)
                for p in sorted(page["Parameters"], key=lambda p: p["Name"]):
                    if re.fullmatch(pattern, p["Name"]):
                        return p["Name"], p["Value"]
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        raise DeployError("no SSM parameter under %s matches ImageId's AllowedPattern" % (IMAGE_PARAMETER_PATHS,))

    def params(self, cluster, tables=None):
        """The values passed to CreateStack (parameters not given keep the template's default)."""
        return {
            "ClusterName": cluster,
            "VpcId": self.vpc,
            "VpcCidr": VPC_CIDR,
            "SubnetId": self.subnet["SubnetId"],
            "SubnetCidr": SUBNET_CIDR,
            "SecondSubnetId": self.second["SubnetId"],
            "RouteTableIds": ",".join(tables or self.tables),
            "AccessCidr": ACCESS_CIDR,
            "ImageId": self.image_path,
            "PackageUrl": PACKAGE_URL,
            "PackageSha256": hashlib.sha256(b"").hexdigest(),
        }

    def ha_params(self, cluster, tables=None):
        """params() with RouterHa: the second router and the second overlay subnet."""
        return dict(self.params(cluster, tables), RouterHa="true", SecondOverlaySubnetId=self.overlay2["SubnetId"],
                    SecondOverlaySubnetCidr=SECOND_OVERLAY_SUBNET_CIDR)

    def evpn_params(self, cluster, tables=None):
        """ha_params() with Flood=evpn: no transit gateway chain, BGP between the nodes."""
        return dict(self.ha_params(cluster, tables), Flood="evpn")

    def pseudo(self, stack_name="", stack_id=""):
        return {
            "AWS::AccountId": self.account,
            "AWS::Region": REGION,
            "AWS::Partition": PSEUDO_PARTITION,
            "AWS::URLSuffix": PSEUDO_URL_SUFFIX,
            "AWS::StackName": stack_name,
            "AWS::StackId": stack_id,
        }

    def typed(self, template, given):
        """Parameter values as the stack's expressions see them (defaults applied, lists split,
        SSM parameters resolved)."""
        out = {}
        for name, p in template.get("Parameters", {}).items():
            if name in given:
                v = given[name]
            elif "Default" in p:
                v = p["Default"]
            else:
                continue
            ptype = p.get("Type", "String")
            if ptype.startswith("AWS::SSM::Parameter::Value<"):
                v = self.aws.ssm.get_parameter(Name=v)["Parameter"]["Value"]
            if ptype == "CommaDelimitedList" or ptype.startswith("List<"):
                v = [i.strip() for i in scalar_str(v).split(",")] if not isinstance(v, list) else v
            elif not isinstance(v, str):
                v = scalar_str(v)
            out[name] = v
        return out

    def env(self, template, given, stack_name="", stack_id="", refs=None, getatt=None):
        return Env(self.typed(template, given), self.pseudo(stack_name, stack_id),
                   template.get("Conditions"), refs, getatt)


# --------------------------------------------------------------------------------------------
# derivation steps


def resources_of(t, rtype, prefix=False):
    """Logical ids of the resources of type rtype (or, with prefix, of every type starting so)."""
    return [k for k, r in t["Resources"].items() if isinstance(r, dict)
            and (str(r.get("Type", "")).startswith(rtype) if prefix else r.get("Type") == rtype)]


def drop_resources(t, ids, reason, refs=None, getatts=None, log=None):
    """Remove ids (with refs/getatts substituted in what stays), their DependsOn entries, and
    transitively whatever still references them; outputs that reference them go too."""
    t = copy.deepcopy(t)
    log = log if log is not None else []
    dropped = set()
    pending = list(ids)
    why = {i: reason for i in ids}
    while pending:
        for i in pending:
            if i in t["Resources"]:
                log.append(("resource", i, t["Resources"][i].get("Type"), why[i]))
                del t["Resources"][i]
            dropped.add(i)
        t["Resources"] = substitute(t["Resources"], refs, getatts)
        t["Outputs"] = substitute(t.get("Outputs", {}), refs, getatts)
        pending = []
        for k, r in t["Resources"].items():
            hit = refs_in(r.get("Properties", {})) & dropped if isinstance(r, dict) else set()
            if k.startswith("Fn::ForEach::"):
                hit = refs_in({k: r}) & dropped
            if hit:
                pending.append(k)
                why[k] = "references %s, which is dropped" % ", ".join(sorted(hit))
    for k, r in t["Resources"].items():
        if isinstance(r, dict) and "DependsOn" in r:
            deps = [r["DependsOn"]] if isinstance(r["DependsOn"], str) else list(r["DependsOn"])
            kept = [d for d in deps if d not in dropped]
            if kept != deps:
                log.append(("dependson", k, None, "DependsOn %s removed" % ", ".join(d for d in deps if d in dropped)))
                if kept:
                    r["DependsOn"] = kept
                else:
                    del r["DependsOn"]
    for k in list(t.get("Outputs", {})):
        hit = refs_in(t["Outputs"][k]) & dropped
        if hit:
            log.append(("output", k, None, "references %s" % ", ".join(sorted(hit))))
            del t["Outputs"][k]
    return t


def restrict(t, ids):
    """A probe template: ids and everything they reference (not DependsOn), with the parameters
    and conditions they need."""
    resources = t["Resources"]
    want, todo = set(), list(ids)
    while todo:
        i = todo.pop()
        if i in want or i not in resources:
            continue
        want.add(i)
        todo.extend(refs_in({i: resources[i]}))
    out = {"AWSTemplateFormatVersion": t.get("AWSTemplateFormatVersion", "2010-09-09")}
    if "Transform" in t:
        out["Transform"] = t["Transform"]
    out["Resources"] = {}
    for k, r in resources.items():
        if k in want:
            r = copy.deepcopy(r)
            if isinstance(r, dict) and "DependsOn" in r:
                deps = [r["DependsOn"]] if isinstance(r["DependsOn"], str) else r["DependsOn"]
                deps = [d for d in deps if d in want]
                if deps:
                    r["DependsOn"] = deps
                else:
                    del r["DependsOn"]
            out["Resources"][k] = r
    conds = t.get("Conditions", {})
    names = refs_in(out["Resources"]) | refs_in(conds)
    out["Parameters"] = {k: v for k, v in t.get("Parameters", {}).items() if k in names}
    if conds:
        out["Conditions"] = conds
    return out


def expand_foreach(section, params):
    """Fn::ForEach (AWS::LanguageExtensions) expanded: one copy of the body per collection item,
    &{Id} in keys -> the item without non-alphanumerics, ${Id} -> the item, Ref Id -> the item."""
    out = {}
    for key, value in section.items():
        if not key.startswith("Fn::ForEach::"):
            out[key] = value
            continue
        ident, collection, body = value
        if isinstance(collection, dict) and "Ref" in collection:
            items = params[collection["Ref"]]
        elif isinstance(collection, list):
            items = collection
        else:
            raise DeployError("%s: collection %s not supported by this checker" % (key, short(collection)))
        if isinstance(items, str):
            items = [i.strip() for i in items.split(",")]
        for item in items:
            for tkey, tbody in body.items():
                new_key = tkey.replace("&{%s}" % ident, re.sub(r"[^A-Za-z0-9]", "", item))
                new_key = new_key.replace("${%s}" % ident, item)
                out.update(expand_foreach({new_key: substitute(copy.deepcopy(tbody), {ident: item})}, params))
    return out


LANGUAGE_EXTENSION_FUNCTIONS = ("Fn::ForEach::", "Fn::Length", "Fn::ToJsonString")


def uses_language_extensions(x):
    if isinstance(x, list):
        return any(uses_language_extensions(i) for i in x)
    if isinstance(x, dict):
        return any(k.startswith(LANGUAGE_EXTENSION_FUNCTIONS) or uses_language_extensions(v) for k, v in x.items())
    return False


class Context:
    """Shared state of one run: the stand-ins created through the service APIs, per cluster."""

    def __init__(self, aws, site, template):
        self.aws = aws
        self.site = site
        self.template = template
        self.secrets = {}  # (cluster, logical) -> (arn, name)
        self.param_groups = {}  # (cluster, logical) -> name
        self.probe_stacks = []

    def param_env(self, t, params):
        return self.site.env(t, params)

    def secret(self, t, logical, params):
        key = (params["ClusterName"], logical)
        if key not in self.secrets:
            props = evaluate(self.template["Resources"][logical].get("Properties", {}),
                             self.param_env(self.template, params))
            sm = self.aws.secretsmanager
            if "SecretString" in props:
                secret_string = props["SecretString"]
            else:
                gen = dict(props.get("GenerateSecretString", {}))
                tmpl = gen.pop("SecretStringTemplate", None)
                key_name = gen.pop("GenerateStringKey", None)
                password = sm.get_random_password(**{k: norm(v) for k, v in gen.items()})["RandomPassword"]
                if tmpl is not None:
                    obj = json.loads(tmpl)
                    obj[key_name] = password
                    secret_string = json.dumps(obj)
                else:
                    secret_string = password
            kwargs = {"Name": props["Name"], "SecretString": secret_string}
            if "Description" in props:
                kwargs["Description"] = props["Description"]
            if props.get("Tags"):
                kwargs["Tags"] = props["Tags"]
            r = sm.create_secret(**kwargs)
            self.secrets[key] = (r["ARN"], props["Name"])
        return self.secrets[key]

    def param_group(self, t, logical, params):
        key = (params["ClusterName"], logical)
        if key not in self.param_groups:
            props = evaluate(self.template["Resources"][logical].get("Properties", {}),
                             self.param_env(self.template, params))
            rds = self.aws.rds
            kwargs = {
                "DBParameterGroupName": props["DBParameterGroupName"],
                "DBParameterGroupFamily": props["Family"],
                "Description": props["Description"],
            }
            if props.get("Tags"):
                kwargs["Tags"] = props["Tags"]
            name = rds.create_db_parameter_group(**kwargs)["DBParameterGroup"]["DBParameterGroupName"]
            plist = [{"ParameterName": k, "ParameterValue": scalar_str(v), "ApplyMethod": "pending-reboot"}
                     for k, v in (props.get("Parameters") or {}).items()]
            for i in range(0, len(plist), 20):
                rds.modify_db_parameter_group(DBParameterGroupName=name, Parameters=plist[i:i + 20])
            self.param_groups[key] = name
        return self.param_groups[key]


def resolve_dynamic(x, aws, where=""):
    """{{resolve:secretsmanager:id:SecretString:key:stage:version}} replaced by the value."""
    pattern = re.compile(r"\{\{resolve:([a-z-]+):(.*?)\}\}")

    def one(m):
        service, ref = m.group(1), m.group(2)
        if service != "secretsmanager":
            raise DeployError("%s: dynamic reference to %s is not supported by this checker" % (where, service))
        if "${" in ref:
            raise DeployError("%s: dynamic reference %s still has an unresolved ${...}" % (where, m.group(0)))
        parts = ref.split(":")
        if ref.startswith("arn:"):
            secret_id, rest = ":".join(parts[:7]), parts[7:]
        else:
            secret_id, rest = parts[0], parts[1:]
        if rest and rest[0] not in ("SecretString", ""):
            raise DeployError("%s: %s: only SecretString references exist" % (where, m.group(0)))
        json_key = rest[1] if len(rest) > 1 and rest[1] else None
        kwargs = {"SecretId": secret_id}
        if len(rest) > 2 and rest[2]:
            kwargs["VersionStage"] = rest[2]
        if len(rest) > 3 and rest[3]:
            kwargs["VersionId"] = rest[3]
        try:
            value = aws.secretsmanager.get_secret_value(**kwargs)["SecretString"]
        except Exception as e:
            raise DeployError("%s: %s: %s" % (where, m.group(0), error_text(e)))
        if json_key is not None:
            try:
                value = json.loads(value)[json_key]
            except (ValueError, KeyError, TypeError):
                raise DeployError("%s: %s: the secret has no JSON key %r" % (where, m.group(0), json_key))
        return scalar_str(value)

    if isinstance(x, list):
        return [resolve_dynamic(v, aws, where) for v in x]
    if isinstance(x, dict):
        if len(x) == 1 and "Fn::Sub" in x:
            s, variables = sub_parts(x["Fn::Sub"])
            if isinstance(s, str) and "{{resolve:" in s:
                s = pattern.sub(lambda m: one(m).replace("${", "${!"), s)
                if not SUB_TOKEN.search(s) and not variables:
                    return s
                return {"Fn::Sub": [s, variables] if isinstance(x["Fn::Sub"], list) else s}
        return {k: resolve_dynamic(v, aws, where + "." + k if where else k) for k, v in x.items()}
    if isinstance(x, str) and "{{resolve:" in x:
        return pattern.sub(one, x)
    return x


def has_dynamic(x):
    return "{{resolve:" in json.dumps(x)


class Step:
    name = ""
    title = ""

    def applies(self, t):
        return True

    def apply(self, t, params, ctx, log):
        raise NotImplementedError

    def probe(self, t, ctx, prober):
        """Prove the step against the emulator; returns evidence lines; raises ClaimError."""
        return []


def resolve_conditions(x, env):
    """x with every Fn::If replaced by its branch for env's conditions (AWS::NoValue removed)."""
    if isinstance(x, list):
        return [v for v in (resolve_conditions(i, env) for i in x) if v is not NO_VALUE]
    if not isinstance(x, dict):
        return x
    if len(x) == 1:
        ((k, v),) = x.items()
        if k == "Fn::If":
            cond, yes, no = v
            return resolve_conditions(yes if env.condition(cond) else no, env)
        if k == "Ref" and v == "AWS::NoValue":
            return NO_VALUE
    out = {}
    for k, v in x.items():
        r = resolve_conditions(v, env)
        if r is not NO_VALUE:
            out[k] = r
    return out


def uses_conditions(t):
    def has_if(x):
        if isinstance(x, list):
            return any(has_if(i) for i in x)
        if isinstance(x, dict):
            return "Fn::If" in x or any(has_if(v) for v in x.values())
        return False
    sections = [t.get("Resources", {}), t.get("Outputs", {})]
    return bool(t.get("Conditions")) and (
        any(has_if(sec) for sec in sections)
        or any(isinstance(r, dict) and "Condition" in r for sec in sections for r in sec.values()))


class Conditions(Step):
    """The stack's conditions applied here: Fn::If replaced by its branch, resources and outputs
    whose Condition is false left out (as CloudFormation does)."""

    name = "conditions"
    title = "Fn::If and resource/output Conditions resolved with the stack's parameters"

    def applies(self, t):
        return uses_conditions(t)

    def apply(self, t, params, ctx, log):
        t = copy.deepcopy(t)
        env = ctx.site.env(t, params)
        for section in ("Resources", "Outputs"):
            for k in list(t.get(section, {})):
                r = t[section][k]
                if isinstance(r, dict) and "Condition" in r:
                    cond = r.pop("Condition")
                    if not env.condition(cond):
                        del t[section][k]
                        log.append(("condition", k, r.get("Type"), "left out: condition %s is false" % cond))
                        continue
                t[section][k] = resolve_conditions(t[section][k], env)
        t.pop("Conditions", None)
        log.append(("condition", "Conditions", None, "resolved: %s" % ", ".join(
            "%s=%s" % (c, str(env.condition(c)).lower()) for c in sorted(env.conditions))))
        return t

    def probe(self, t, ctx, prober):
        def has_novalue_item(x):
            if isinstance(x, list):
                return any(isinstance(i, dict) and "Fn::If" in i and {"Ref": "AWS::NoValue"} in i["Fn::If"][1:]
                           for i in x) or any(has_novalue_item(i) for i in x)
            if isinstance(x, dict):
                return any(has_novalue_item(v) for v in x.values())
            return False
        ids = sorted(k for k, r in t["Resources"].items() if isinstance(r, dict) and has_novalue_item(r))
        if not ids:
            return ["no Fn::If with an AWS::NoValue list item: nothing to prove"]
        a_t = restrict(t, ids[:1])
        a_t.pop("Transform", None)
        a = prober.run("cond-a", a_t)
        b = prober.run("cond-b", self.apply(a_t, prober.params, ctx, []))
        if a.complete:
            raise ClaimError("%s with an Fn::If -> AWS::NoValue list item deployed: moto handles it now; "
                             "remove this step" % ids[0])
        if not b.complete:
            raise ClaimError("%s with its conditions resolved: %s" % (ids[0], b.summary()))
        return ["%s as written (an Fn::If -> AWS::NoValue list item): %s" % (ids[0], a.summary()),
                "%s with the conditions resolved here: %s" % (ids[0], b.summary())]


class ScopeTransitGateway(Step):
    name = "tgw"
    title = "the Transit Gateway part is out of scope"

    def ids(self, t):
        return resources_of(t, "AWS::EC2::TransitGateway", prefix=True)

    def applies(self, t):
        return bool(self.ids(t))

    def apply(self, t, params, ctx, log):
        # a Ref to a dropped one (the hosts' wait for the second subnet's association) becomes a
        # placeholder: what refers to them stays
        ids = self.ids(t)
        return drop_resources(t, ids, "out of scope: the non-Transit-Gateway part is deployed",
                              refs={i: "dropped-" + i for i in ids}, log=log)

    def probe(self, t, ctx, prober):
        ids = self.ids(t)
        probe_t = restrict(t, ids)
        probe_t.pop("Transform", None)
        out = prober.run("tgw", probe_t)
        lines = []
        ec2 = ctx.aws.ec2
        self.fates = {}
        if out.error:
            for i in ids:
                self.fates[i] = "moto's CreateStack fails on the Transit Gateway part: " + out.error
            return ["the TGW part alone: " + out.summary()]
        tgw_ids = []
        for i in ids:
            rtype = t["Resources"][i]["Type"]
            if i in out.resources and out.resources[i][1]:
                phys = out.resources[i][1]
                if rtype == "AWS::EC2::TransitGateway":
                    found = ec2.describe_transit_gateways(TransitGatewayIds=[phys])["TransitGateways"]
                    if not found:
                        raise ClaimError("%s listed as %s but DescribeTransitGateways has none" % (i, phys))
                    tgw_ids.append(phys)
                self.fates[i] = "moto's CloudFormation does create %s (%s)" % (rtype, phys)
            else:
                self.fates[i] = ("moto has no CloudFormation model for %s: it skips the resource silently "
                                 "(the probe stack is %s, nothing was created)" % (rtype, out.status))
        # what the skipped ones would have made: nothing
        if tgw_ids:
            att = ec2.describe_transit_gateway_vpc_attachments(
                Filters=[{"Name": "transit-gateway-id", "Values": tgw_ids}])["TransitGatewayVpcAttachments"]
            try:  # the shim's call (moto has none)
                dom = ec2.describe_transit_gateway_multicast_domains(
                    Filters=[{"Name": "transit-gateway-id", "Values": tgw_ids}])["TransitGatewayMulticastDomains"]
            except Exception:
                dom = []
            lines.append("the TGW part alone: %s; listed: %s; TGW attachments: %d, multicast domains: %d"
                         % (out.status, ", ".join(sorted(out.resources)) or "none", len(att), len(dom)))
            for i in ids:
                rtype = t["Resources"][i]["Type"]
                if rtype == "AWS::EC2::TransitGatewayVpcAttachment" and i not in out.resources and att:
                    raise ClaimError("%s not listed but an attachment exists" % i)
                if rtype == "AWS::EC2::TransitGatewayMulticastDomain" and i not in out.resources and dom:
                    raise ClaimError("%s not listed but a multicast domain exists" % i)
        else:
            lines.append("the TGW part alone: %s; listed: %s" % (out.status, ", ".join(sorted(out.resources)) or "none"))
        return lines


class SsmParameterDefault(Step):
    name = "ssm-default"
    title = "SSM-typed parameters lose their Default (a value is always passed)"

    def targets(self, t):
        return [k for k, p in t.get("Parameters", {}).items()
                if str(p.get("Type", "")).startswith("AWS::SSM::Parameter::") and "Default" in p]

    def applies(self, t):
        return bool(self.targets(t))

    def apply(self, t, params, ctx, log):
        t = copy.deepcopy(t)
        for k in self.targets(t):
            if k in params:
                log.append(("parameter", k, t["Parameters"][k]["Type"], "Default %r removed" % t["Parameters"][k]["Default"]))
                del t["Parameters"][k]["Default"]
        return t

    def probe(self, t, ctx, prober):
        lines = []
        for k in self.targets(t):
            default = t["Parameters"][k]["Default"]
            try:
                ctx.aws.ssm.get_parameter(Name=default)
                exists = True
            except Exception:
                exists = False
            base = {"AWSTemplateFormatVersion": "2010-09-09",
                    "Parameters": {k: copy.deepcopy(t["Parameters"][k])},
                    "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}
            a = prober.run("ssm-a", base)
            b_t = copy.deepcopy(base)
            del b_t["Parameters"][k]["Default"]
            b = prober.run("ssm-b", b_t)
            if exists:
                lines.append("%s's default %s exists in the emulator; no failure expected" % (k, default))
                if not b.complete:
                    raise ClaimError("%s without Default: %s" % (k, b.summary()))
                continue
            if a.complete:
                raise ClaimError("%s with its Default (absent from moto's SSM) and a value passed deployed: "
                                 "moto no longer resolves the default; remove this step" % k)
            if not b.complete:
                raise ClaimError("%s without Default: %s" % (k, b.summary()))
            lines.append("%s (default %s, absent from moto's SSM) with the value %s passed: %s"
                         % (k, default, ctx.site.image_path, a.summary()))
            lines.append("the same without the Default: %s" % b.summary())
        return lines


PORT_PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6", "6", "17", "1", "58")


class RulePorts(Step):
    """Rules of protocols without ports (IGMP is "2"): AWS ignores ports there (all = -1)."""

    name = "rule-ports"
    title = "rules of port-less protocols (IGMP) get FromPort/ToPort -1"

    def targets(self, t):
        out = []
        for k in resources_of(t, "AWS::EC2::SecurityGroup"):
            props = t["Resources"][k].get("Properties", {})
            for key in ("SecurityGroupIngress", "SecurityGroupEgress"):
                for i, rule in enumerate(props.get(key) or []):
                    if (isinstance(rule, dict) and "FromPort" not in rule and "ToPort" not in rule
                            and str(rule.get("IpProtocol")).lower() not in PORT_PROTOCOLS):
                        out.append((k, key, i))
        return out

    def applies(self, t):
        return bool(self.targets(t))

    def apply(self, t, params, ctx, log):
        t = copy.deepcopy(t)
        for k, key, i in self.targets(t):
            rule = t["Resources"][k]["Properties"][key][i]
            rule["FromPort"] = -1
            rule["ToPort"] = -1
            log.append(("rule", k, "AWS::EC2::SecurityGroup",
                        "%s[%d] (IpProtocol %s): FromPort/ToPort -1 added" % (key, i, rule.get("IpProtocol"))))
        return t

    def probe(self, t, ctx, prober):
        lines = []
        for k in sorted({k for k, _, _ in self.targets(t)}):
            a_t = restrict(t, [k])
            a = prober.run("ports-a", a_t)
            b = prober.run("ports-b", self.apply(a_t, prober.params, ctx, []))
            if a.complete:
                raise ClaimError("%s with a port-less rule deployed: moto handles it now; remove this step" % k)
            if not b.complete:
                raise ClaimError("%s with ports -1: %s" % (k, b.summary()))
            lines.append("%s as written: %s" % (k, a.summary()))
            lines.append("%s with FromPort/ToPort -1: %s" % (k, b.summary()))
        return lines


class LanguageExtensions(Step):
    name = "language-extensions"
    title = "Transform AWS::LanguageExtensions removed, Fn::ForEach expanded by this checker"

    def applies(self, t):
        return "Transform" in t or uses_language_extensions(t.get("Resources", {}))

    def apply(self, t, params, ctx, log):
        t = copy.deepcopy(t)
        transform = t.pop("Transform", None)
        if transform is not None:
            transforms = transform if isinstance(transform, list) else [transform]
            if transforms != ["AWS::LanguageExtensions"]:
                raise DeployError("Transform %s: only AWS::LanguageExtensions is supported" % transforms)
            log.append(("transform", "Transform", None, "AWS::LanguageExtensions removed"))
        typed = ctx.site.typed(t, params)
        for section in ("Resources", "Outputs", "Conditions"):
            if section in t:
                before = set(t[section])
                t[section] = expand_foreach(t[section], typed)
                for k in sorted(before - set(t[section])):
                    made = sorted(set(t[section]) - before)
                    log.append(("foreach", k, None, "expanded into %s" % ", ".join(made)))
        if uses_language_extensions(t):
            raise DeployError("the template uses a language extension this checker does not expand")
        return t

    def probe(self, t, ctx, prober):
        loops = [k for k in t["Resources"] if k.startswith("Fn::ForEach::")]
        if not loops:
            return []
        a_t = restrict(t, loops)
        a = prober.run("foreach-a", a_t)
        b_t = self.apply(a_t, prober.params, ctx, [])
        b = prober.run("foreach-b", b_t)
        if a.complete:
            raise ClaimError("the template's Fn::ForEach with its Transform deployed: moto handles "
                             "AWS::LanguageExtensions now; remove this step")
        if not b.complete:
            raise ClaimError("Fn::ForEach expanded: %s" % b.summary())
        routes = ctx.aws.ec2.describe_route_tables(RouteTableIds=[ctx.site.probe_table])["RouteTables"][0]["Routes"]
        made = [r["DestinationCidrBlock"] for r in routes if r.get("NetworkInterfaceId")]
        return ["%s with the Transform: %s" % (", ".join(loops), a.summary()),
                "expanded here, without the Transform: %s; routes in the probe's table: %s"
                % (b.summary(), ", ".join(made) or "none")]


class Instances(Step):
    name = "instances"
    title = "AWS::EC2::Instance dropped"

    def ids(self, t):
        return resources_of(t, "AWS::EC2::Instance")

    def applies(self, t):
        return bool(self.ids(t))

    def subnet_of(self, t, i, env):
        props = t["Resources"][i].get("Properties", {})
        if "SubnetId" in props:
            return evaluate(props["SubnetId"], env)
        for ni in props.get("NetworkInterfaces") or []:
            if str(ni.get("DeviceIndex", "0")) != "0":
                continue
            if "SubnetId" in ni:
                return evaluate(ni["SubnetId"], env)
            eni = ni.get("NetworkInterfaceId")
            # a Select that also names what the instance waits for (the multicast association:
            # a DependsOn cannot name a conditional resource): the interface is the selected item
            while (isinstance(eni, dict) and "Fn::Select" in eni and isinstance(eni["Fn::Select"], list)
                   and isinstance(eni["Fn::Select"][1], list)):
                index, items = eni["Fn::Select"]
                eni = items[int(evaluate(index, env))]
            if isinstance(eni, dict) and "Ref" in eni and eni["Ref"] in t["Resources"]:
                return evaluate(t["Resources"][eni["Ref"]]["Properties"]["SubnetId"], env)
        return None

    def apply(self, t, params, ctx, log):
        env = ctx.site.env(t, params)
        getatts = {}
        for i in self.ids(t):
            subnet = self.subnet_of(t, i, env)
            if subnet:
                az = ctx.aws.ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["AvailabilityZone"]
                getatts[(i, "AvailabilityZone")] = az
                for k, r in t["Resources"].items():
                    if "%s.AvailabilityZone" % i in json.dumps(r) or '["%s", "AvailabilityZone"]' % i in json.dumps(r):
                        log.append(("getatt", k, None, "GetAtt %s.AvailabilityZone -> %s (the zone of %s's subnet %s)"
                                    % (i, az, i, subnet)))
        return drop_resources(t, self.ids(t), self.reason, getatts=getatts, log=log)

    reason = ("moto's CloudFormation cannot create an instance whose image comes from a launch template: "
              "CreateStack fails with HTTP 500 (moto's model reads ImageId from the instance's own properties, "
              "KeyError 'ImageId', and ignores LaunchTemplate and NetworkInterfaces)")

    def azs(self, t, ids, ctx, params):
        """GetAtt X.AvailabilityZone of each instance X in ids -> the zone of its subnet."""
        env = ctx.site.env(t, params)
        out = {}
        for x in ids:
            subnet = self.subnet_of(t, x, env)
            if subnet:
                out[(x, "AvailabilityZone")] = ctx.aws.ec2.describe_subnets(
                    SubnetIds=[subnet])["Subnets"][0]["AvailabilityZone"]
        return out

    def probe(self, t, ctx, prober):
        lines = []
        for i in self.ids(t):
            # the other instances dropped as apply() drops them (a GetAtt of their zone, e.g. the
            # database's, becomes their subnet's), so only i is under test
            others = [x for x in self.ids(t) if x != i]
            t_i = drop_resources(t, others, self.reason,
                                 getatts=self.azs(t, others, ctx, prober.params)) if others else t
            # and what the later steps work around (e.g. the database an instance's user-data
            # names, with its parameter group) as they work around it, so only i is under test
            for later in STEPS[STEPS.index(self) + 1:]:
                if later.applies(t_i):
                    t_i = later.apply(t_i, prober.params, ctx, [])
            a_t = restrict(t_i, [i])
            b_t = copy.deepcopy(a_t)
            del b_t["Resources"][i]
            b_t = restrict(b_t, list(b_t["Resources"]))
            b = prober.run("inst-b", b_t)
            a = prober.run("inst-a", a_t)
            if not b.complete:
                raise ClaimError("%s's dependencies alone: %s" % (i, b.summary()))
            if a.complete:
                raise ClaimError("%s (its image from a launch template) deployed: moto handles it now; "
                                 "remove this step" % i)
            lines.append("%s with what it references (%s): %s"
                         % (i, ", ".join(sorted(set(a_t["Resources"]) - {i})), a.summary()))
            lines.append("the same without %s: %s" % (i, b.summary()))
            # C: the launch template's ImageId and InstanceType copied onto the instance itself
            c_t = copy.deepcopy(a_t)
            props = c_t["Resources"][i]["Properties"]
            lt_ref = (props.get("LaunchTemplate") or {}).get("LaunchTemplateId")
            if isinstance(lt_ref, dict) and lt_ref.get("Ref") in c_t["Resources"]:
                data = c_t["Resources"][lt_ref["Ref"]]["Properties"]["LaunchTemplateData"]
                for key in ("ImageId", "InstanceType"):
                    if key in data:
                        props[key] = copy.deepcopy(data[key])
                c = prober.run("inst-c", c_t)
                if not c.complete:
                    raise ClaimError("%s with ImageId on the instance itself: %s" % (i, c.summary()))
                policy = c_t["Resources"][i].get("CreationPolicy")
                signals = ctx.aws.shim("/_shim/signals")
                count = None if signals is None else sum(
                    1 for x in signals.get("signals", []) if x.get("stack") in (c.name, c.stack_id))
                lines.append("the same with the launch template's ImageId and InstanceType on %s itself: %s%s"
                             % (i, c.summary(), "" if not policy else
                                ", despite its CreationPolicy %s and %s SignalResource calls (moto ignores "
                                "CreationPolicy)" % (short(policy.get("ResourceSignal")), count)))
        return lines


class Secrets(Step):
    name = "secrets"
    title = "AWS::SecretsManager::Secret dropped; created through the Secrets Manager API instead"
    reason = ("moto has no CloudFormation model for AWS::SecretsManager::Secret: it skips the resource "
              "silently (the stack completes, no secret exists)")

    def ids(self, t):
        return resources_of(t, "AWS::SecretsManager::Secret")

    def applies(self, t):
        return bool(self.ids(t))

    def apply(self, t, params, ctx, log):
        refs = {}
        for i in self.ids(t):
            arn, name = ctx.secret(t, i, params)
            refs[i] = arn
            log.append(("standin", i, "AWS::SecretsManager::Secret", "created through the API: %s" % name))
        return drop_resources(t, self.ids(t), self.reason, refs=refs, log=log)

    def probe(self, t, ctx, prober):
        ids = self.ids(t)
        a_t = restrict(t, ids)
        a = prober.run("secrets", a_t)
        if not a.complete:
            raise ClaimError("the secrets alone: %s" % a.summary())
        env = ctx.site.env(a_t, a.params)
        missing = []
        for i in ids:
            name = evaluate(t["Resources"][i]["Properties"]["Name"], env)
            try:
                ctx.aws.secretsmanager.describe_secret(SecretId=name)
                raise ClaimError("moto's CloudFormation created secret %s (%s): remove this step" % (name, i))
            except ClaimError:
                raise
            except Exception:
                missing.append(name)
            if i in a.resources:
                raise ClaimError("%s is listed as a stack resource now" % i)
        return ["%s alone: %s, moto lists %d resource(s) without id, DescribeSecret: not found for %s"
                % (", ".join(ids), a.status, a.unnamed, ", ".join(missing))]


class DynamicReferences(Step):
    name = "dynamic-references"
    title = "{{resolve:secretsmanager:...}} dynamic references resolved by this checker"

    def applies(self, t):
        return has_dynamic(t.get("Resources", {}))

    def apply(self, t, params, ctx, log):
        t = copy.deepcopy(t)
        for k, r in t["Resources"].items():
            if has_dynamic(r):
                props = r.get("Properties", {})
                for p in sorted(props):
                    if has_dynamic(props[p]):
                        log.append(("dynamic", k, r.get("Type"), "%s resolved" % p))
                r["Properties"] = resolve_dynamic(props, ctx.aws, k)
        return t

    def probe(self, t, ctx, prober):
        # one of the template's own references, in a resource that keeps a string as given
        for k, r in t["Resources"].items():
            for p, v in (r.get("Properties") or {}).items():
                if has_dynamic(v):
                    text = evaluate(v, ctx.site.env(t, prober.params))
                    name = "/cfn-moto/%s/%s" % (prober.run_id, prober.next_label("dynref"))
                    probe_t = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Probe": {
                        "Type": "AWS::SSM::Parameter", "Properties": {"Name": name, "Type": "String", "Value": text}}}}
                    a = prober.run("dynref", probe_t)
                    if not a.complete:
                        raise ClaimError("probe AWS::SSM::Parameter: %s" % a.summary())
                    got = ctx.aws.ssm.get_parameter(Name=name)["Parameter"]["Value"]
                    if got != text:
                        raise ClaimError("moto resolved %s to %r: remove this step" % (text, got))
                    return ["%s.%s's reference %s in an AWS::SSM::Parameter: stored verbatim" % (k, p, short(text, 100))]
        return []


class ParameterGroups(Step):
    name = "parameter-groups"
    title = "AWS::RDS::DBParameterGroup dropped; created through the RDS API instead"
    reason = ("moto's AWS::RDS::DBParameterGroup ignores DBParameterGroupName (it names the group "
              "<stack>-<logical id>-<random>), and a DBInstance with a Ref to it fails with HTTP 500 (moto's "
              "Ref yields the model object, not the name: AttributeError in the DBInstance)")

    def ids(self, t):
        return resources_of(t, "AWS::RDS::DBParameterGroup")

    def applies(self, t):
        return bool(self.ids(t))

    def apply(self, t, params, ctx, log):
        refs = {}
        for i in self.ids(t):
            refs[i] = ctx.param_group(t, i, params)
            log.append(("standin", i, "AWS::RDS::DBParameterGroup", "created through the API: %s" % refs[i]))
        return drop_resources(t, self.ids(t), self.reason, refs=refs, log=log)

    def probe(self, t, ctx, prober):
        lines = []
        rds = ctx.aws.rds
        for i in self.ids(t):
            users = [k for k, r in t["Resources"].items() if i in refs_in(r.get("Properties", {}))]
            # 1. the group alone: what moto names it, and the template's parameters in it
            alone = prober.run("pg", restrict(t, [i]))
            if not alone.complete:
                raise ClaimError("%s alone: %s" % (i, alone.summary()))
            env = ctx.site.env(t, alone.params)
            props = evaluate(t["Resources"][i]["Properties"], env)
            want = props["DBParameterGroupName"].lower()
            names = [g["DBParameterGroupName"] for g in paginate(rds, "describe_db_parameter_groups", "DBParameterGroups")]
            if want in names:
                raise ClaimError("moto named %s %s as the template says: remove this step" % (i, want))
            prefix = ("%s-%s-" % (alone.name, i)).lower()
            made = [n for n in names if n.startswith(prefix)]
            if len(made) != 1:
                raise ClaimError("%s: no group named %s* (groups: %s)" % (i, prefix, names))
            got = {x["ParameterName"]: x.get("ParameterValue") for x in paginate(
                rds, "describe_db_parameters", "Parameters", DBParameterGroupName=made[0], Source="user")}
            expected = {k: scalar_str(v) for k, v in (props.get("Parameters") or {}).items()}
            if got != expected:
                raise ClaimError("the group moto's CloudFormation made (%s) has parameters %s, the template %s"
                                 % (made[0], got, expected))
            lines.append("%s alone: %s, named %s instead of %s (its %d parameters as the template says)"
                         % (i, alone.status, made[0], want, len(got)))
            # 2. a user of it, with and without the Ref
            for u in users:
                a_t = restrict(t, [u])
                a = prober.run("pg-a", a_t)
                b = prober.run("pg-b", self.apply(a_t, prober.params, ctx, []))
                if a.complete:
                    raise ClaimError("%s with Ref %s deployed: moto handles the Ref now" % (u, i))
                if not b.complete:
                    raise ClaimError("%s with the group's name instead of the Ref: %s" % (u, b.summary()))
                lines.append("%s with Ref %s: %s" % (u, i, a.summary()))
                lines.append("%s with the name of a group made through the API: %s" % (u, b.summary()))
        return lines


STEPS = [Conditions(), ScopeTransitGateway(), SsmParameterDefault(), RulePorts(), LanguageExtensions(), Instances(),
         Secrets(), DynamicReferences(), ParameterGroups()]


def derive(t, params, ctx, upto=None, log=None):
    log = log if log is not None else []
    t = copy.deepcopy(t)
    t.setdefault("Outputs", {})
    for step in STEPS[:upto]:
        if step.applies(t):
            t = step.apply(t, params, ctx, log)
    return t


def paginate(client, op, key, **kwargs):
    out = []
    while True:
        page = getattr(client, op)(**kwargs)
        out.extend(page.get(key, []))
        marker = page.get("Marker") or page.get("NextToken")
        if not marker:
            return out
        kwargs["Marker" if "Marker" in page else "NextToken"] = marker


class Prober:
    """Probe stacks: each with its own cluster name, so that names never collide (a failed
    CreateStack leaves what moto made before the failure). Deleted at the end of each step."""

    def __init__(self, aws, site, run_id):
        self.aws = aws
        self.site = site
        self.run_id = run_id
        self.n = 0
        self.params = None
        self.labels = {}
        self.stacks = []
        self.total = 0

    def next_label(self, label):
        self.labels[label] = self.labels.get(label, 0) + 1
        return "%s%d" % (label, self.labels[label])

    def begin(self):
        """Parameters for the probes of one step (each stack then gets its own ClusterName)."""
        self.n += 1
        self.params = self.site.params("p%d-%s" % (self.n, self.run_id), [self.site.probe_table])

    def run(self, label, template):
        label = self.next_label(label)
        name = "cfn-moto-%s-%s" % (self.run_id, label)
        params = dict(self.params, ClusterName="p%d%s-%s" % (self.n, label.replace("-", ""), self.run_id))
        out = deploy(self.aws, name, template, params)
        out.params = params
        self.stacks.append(name)
        self.total += 1
        return out

    def cleanup(self):
        for name in self.stacks:
            delete_stack(self.aws, name)
        self.stacks = []


def culprits(t, prober):
    """The resources whose stack (with what they reference) fails while that of everything they
    reference deploys: where moto breaks."""
    fails = {}

    def ok(ids):
        key = tuple(sorted(ids))
        if key not in fails:
            out = prober.run("find", restrict(t, list(ids)))
            fails[key] = out
        return fails[key].complete

    found = []
    for k in sorted(t["Resources"]):
        if ok([k]):
            continue
        deps = sorted(set(restrict(t, [k])["Resources"]) - {k})
        if not deps or ok(deps):
            found.append((k, fails[(k,)].summary()))
    if not found:
        found = [("(none)", "every resource deploys with what it references: the failure needs the whole stack")]
    return found


# --------------------------------------------------------------------------------------------
# verification of the deployed stack


class Verifier:
    def __init__(self, aws, site, ctx, derived, original, params, outcome, report):
        self.aws = aws
        self.site = site
        self.ctx = ctx
        self.t = derived
        self.original = original
        self.params = params
        self.out = outcome
        self.r = report
        refs = {}
        self.empty_physical = []
        for k, (rtype, phys, status) in outcome.resources.items():
            if not phys:
                self.empty_physical.append(k)
                phys = self._name_of(k)
            refs[k] = phys
        self.env = site.env(derived, params, outcome.name, outcome.stack_id, refs, self.getatt)
        self.phys = refs

    NAME_PROPERTY = {"AWS::RDS::DBSubnetGroup": "DBSubnetGroupName"}

    def _name_of(self, k):
        r = self.t["Resources"][k]
        prop = self.NAME_PROPERTY.get(r["Type"])
        if prop and prop in r.get("Properties", {}):
            env = self.site.env(self.t, self.params, self.out.name, self.out.stack_id)
            return evaluate(r["Properties"][prop], env)
        return None

    def getatt(self, name, attr):
        rtype = self.t["Resources"].get(name, {}).get("Type")
        phys = self.phys.get(name)
        if rtype == "AWS::IAM::InstanceProfile" and attr == "Arn":
            return self.aws.iam.get_instance_profile(InstanceProfileName=phys)["InstanceProfile"]["Arn"]
        if rtype == "AWS::IAM::Role" and attr == "Arn":
            return self.aws.iam.get_role(RoleName=phys)["Role"]["Arn"]
        if rtype == "AWS::EC2::LaunchTemplate" and attr in ("LatestVersionNumber", "DefaultVersionNumber"):
            lt = self.aws.ec2.describe_launch_templates(LaunchTemplateIds=[phys])["LaunchTemplates"][0]
            return str(lt["LatestVersionNumber" if attr.startswith("Latest") else "DefaultVersionNumber"])
        if rtype == "AWS::EC2::NetworkInterface" and attr == "PrimaryPrivateIpAddress":
            eni = self.aws.ec2.describe_network_interfaces(NetworkInterfaceIds=[phys])["NetworkInterfaces"][0]
            return eni["PrivateIpAddress"]
        if rtype == "AWS::RDS::DBInstance" and attr in ("Endpoint.Address", "Endpoint.Port"):
            db = self.aws.rds.describe_db_instances(DBInstanceIdentifier=phys)["DBInstances"][0]
            return str(db["Endpoint"][attr.split(".")[1]])
        raise Unresolved("GetAtt %s.%s" % (name, attr))

    def props(self, k):
        return evaluate(self.t["Resources"][k].get("Properties", {}), self.env)

    def where(self, k):
        return "%s (%s)" % (k, self.t["Resources"][k]["Type"])

    def run(self):
        self.stack()
        order = ["AWS::EC2::SecurityGroup", "AWS::EC2::Route", "AWS::EC2::NetworkInterface", "AWS::EFS::FileSystem",
                 "AWS::EFS::MountTarget", "AWS::RDS::DBSubnetGroup", "AWS::RDS::DBInstance", "AWS::IAM::Role",
                 "AWS::IAM::InstanceProfile", "AWS::EC2::LaunchTemplate", "AWS::AutoScaling::AutoScalingGroup"]
        kinds = sorted({r["Type"] for r in self.t["Resources"].values()}, key=lambda x: (order.index(x) if x in order else 99, x))
        for kind in kinds:
            fn = getattr(self, "v_" + kind.replace("AWS::", "").replace("::", "_"), None)
            for k in sorted(resources_of(self.t, kind)):
                if fn is None:
                    self.r.notes.append("%s: no describe checks for %s" % (k, kind))
                    continue
                try:
                    fn(k, self.props(k))
                except Unresolved as e:
                    self.r.fail(self.where(k), "cannot evaluate the template's properties: %s" % e)
                except Exception as e:
                    self.r.fail(self.where(k), "describe failed: %s" % error_text(e))
        self.standins()
        self.outputs()

    # --- the stack
    def stack(self):
        w = "stack %s" % self.out.name
        self.r.eq(w, "status", "CREATE_COMPLETE", self.out.status)
        missing = sorted(set(self.t["Resources"]) - set(self.out.resources))
        extra = sorted(set(self.out.resources) - set(self.t["Resources"]))
        if missing or extra:
            self.r.fail(w, "resources of the template moto did not create: %s; not in the template: %s"
                        % (", ".join(missing) or "none", ", ".join(extra) or "none"))
        else:
            self.r.ok(w, "every resource listed (%d)" % len(self.out.resources))
        self.r.eq(w, "resources moto skipped (listed without a logical id)", 0, self.out.unnamed)
        bad = {k: v[2] for k, v in self.out.resources.items() if v[2] != "CREATE_COMPLETE"}
        self.r.eq(w, "resources not CREATE_COMPLETE", {}, bad)
        for k in self.empty_physical:
            self.r.gap(w, "moto lists %s without a PhysicalResourceId (its Ref is taken as %s)" % (k, self.phys[k]))

    # --- EC2
    @staticmethod
    def rule_key(proto, from_port, to_port):
        proto = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}.get(str(proto).lower(), str(proto).lower())
        ports = (-1, -1) if proto == "-1" else (norm(from_port if from_port is not None else -1),
                                                 norm(to_port if to_port is not None else -1))
        return (proto,) + ports

    @staticmethod
    def rule_text(key):
        proto, lo, hi, kind, source = key
        ports = "" if (lo, hi) == (-1, -1) else (" %s" % lo if lo == hi else " %s-%s" % (lo, hi))
        return "%s%s from %s" % (proto, ports, source)

    def template_rules(self, rules):
        out = []
        for rule in rules or []:
            key = self.rule_key(rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort"))
            for field, kind in (("CidrIp", "cidr"), ("CidrIpv6", "cidr6"), ("SourceSecurityGroupId", "sg"),
                                ("DestinationSecurityGroupId", "sg"), ("SourcePrefixListId", "pl"),
                                ("DestinationPrefixListId", "pl")):
                if field in rule:
                    out.append((key + (kind, rule[field]), rule.get("Description")))
        return out

    def actual_rules(self, perms):
        out = []
        for p in perms:
            key = self.rule_key(p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort"))
            for x in p.get("IpRanges", []):
                out.append((key + ("cidr", x["CidrIp"]), x.get("Description")))
            for x in p.get("Ipv6Ranges", []):
                out.append((key + ("cidr6", x["CidrIpv6"]), x.get("Description")))
            for x in p.get("UserIdGroupPairs", []):
                out.append((key + ("sg", x["GroupId"]), x.get("Description")))
            for x in p.get("PrefixListIds", []):
                out.append((key + ("pl", x["PrefixListId"]), x.get("Description")))
        return out

    def v_EC2_SecurityGroup(self, k, p):
        w = self.where(k)
        g = self.aws.ec2.describe_security_groups(GroupIds=[self.phys[k]])["SecurityGroups"][0]
        if "GroupName" in p:
            self.r.eq(w, "GroupName", p["GroupName"], g["GroupName"])
        self.r.eq(w, "GroupDescription", p.get("GroupDescription"), g["Description"])
        self.r.eq(w, "VpcId", p.get("VpcId"), g.get("VpcId"))
        self.r.tags(w, p.get("Tags"), g.get("Tags"))
        for prop, field, default in (("SecurityGroupIngress", "IpPermissions", []),
                                     ("SecurityGroupEgress", "IpPermissionsEgress",
                                      [{"IpProtocol": "-1", "CidrIp": "0.0.0.0/0"}])):
            want = self.template_rules(p.get(prop, default))
            got = self.actual_rules(g.get(field, []))
            want_keys = sorted(self.rule_text(x[0]) for x in want)
            got_keys = sorted(self.rule_text(x[0]) for x in got)
            label = prop if prop in p else prop + " (none given: AWS's default allow-all)"
            if want_keys != got_keys:
                missing = [x for x in want_keys if x not in got_keys]
                extra = [x for x in got_keys if x not in want_keys]
                self.r.fail(w, "%s: missing %s; not in the template %s" % (label, missing or "none", extra or "none"))
            else:
                self.r.ok(w, "%s: %s" % (label, ", ".join(want_keys)))
                got_desc = {x[0]: x[1] for x in got}
                lost = 0
                for key, desc in want:
                    actual = got_desc.get(key)
                    if desc is None:
                        continue
                    if actual is None:
                        lost += 1
                    else:
                        self.r.eq(w, "description of %s" % self.rule_text(key), desc, actual)
                if lost:
                    self.r.gap(w, "%s: moto's CloudFormation drops rule descriptions (%d of %d rules)"
                               % (prop, lost, sum(1 for _, d in want if d is not None)))

    def v_EC2_Route(self, k, p):
        w = self.where(k)
        table = p["RouteTableId"]
        rt = self.aws.ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0]
        dest = p.get("DestinationCidrBlock")
        routes = [x for x in rt["Routes"] if x.get("DestinationCidrBlock") == dest]
        if not self.r.eq(w, "routes to %s in %s" % (dest, table), 1, len(routes)):
            return
        route = routes[0]
        for target in ("NetworkInterfaceId", "GatewayId", "InstanceId", "NatGatewayId", "TransitGatewayId",
                       "VpcPeeringConnectionId"):
            if target in p:
                self.r.eq(w, "%s of %s -> %s" % (target, table, dest), p[target], route.get(target))
        self.r.eq(w, "state", "active", route.get("State"))

    def routes_cover_tables(self):
        """The template's Fn::ForEach: one route per RouteTableIds entry."""
        loops = {k: v for k, v in self.original["Resources"].items() if k.startswith("Fn::ForEach::")}
        for loop, (ident, collection, body) in loops.items():
            items = evaluate(collection, self.env)
            for tkey, tbody in body.items():
                dest = evaluate(substitute(tbody["Properties"].get("DestinationCidrBlock"), {ident: "x"}), self.env)
                for item in items:
                    rt = self.aws.ec2.describe_route_tables(RouteTableIds=[item])["RouteTables"][0]
                    hit = [x for x in rt["Routes"] if x.get("DestinationCidrBlock") == dest]
                    self.r.eq("%s (%s)" % (loop, "RouteTableIds"), "a route to %s in %s" % (dest, item), 1, len(hit))

    def v_EC2_NetworkInterface(self, k, p):
        w = self.where(k)
        ec2 = self.aws.ec2
        eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[self.phys[k]])["NetworkInterfaces"][0]
        self.r.eq(w, "SubnetId", p.get("SubnetId"), eni["SubnetId"])
        if "Description" in p:
            self.r.eq(w, "Description", p["Description"], eni.get("Description"))
        vpc = ec2.describe_subnets(SubnetIds=[eni["SubnetId"]])["Subnets"][0]["VpcId"]
        default_sg = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                           {"Name": "group-name", "Values": ["default"]}])
        default_ids = sorted(g["GroupId"] for g in default_sg["SecurityGroups"])
        if "GroupSet" in p:
            self.r.eq_or_gap(w, "GroupSet", sorted(p["GroupSet"]), sorted(g["GroupId"] for g in eni["Groups"]),
                             default_ids, "moto's CloudFormation ignores GroupSet (it reads SecurityGroups): the VPC's default group")
        if "SourceDestCheck" in p:
            self.r.eq_or_gap(w, "SourceDestCheck", p["SourceDestCheck"], eni.get("SourceDestCheck"), True,
                             "moto's CloudFormation ignores SourceDestCheck")
        if p.get("Tags"):
            exp, act = tags_dict(p["Tags"]), tags_dict(eni.get("TagSet"))
            if all(act.get(x) == y for x, y in exp.items()):
                self.r.ok(w, "tags")
            elif not any(x in act for x in exp):
                self.r.gap(w, "Tags: moto's CloudFormation ignores an ENI's Tags (moto has %s)" % short(sorted(act)))
            else:
                self.r.fail(w, "tags: template says %s, moto has %s" % (short(exp), short(act)))

    # --- EFS
    def v_EFS_FileSystem(self, k, p):
        w = self.where(k)
        fs = self.aws.efs.describe_file_systems(FileSystemId=self.phys[k])["FileSystems"][0]
        for prop in ("Encrypted", "PerformanceMode", "ThroughputMode", "ProvisionedThroughputInMibps", "KmsKeyId"):
            if prop in p:
                self.r.eq(w, prop, p[prop], fs.get(prop))
        self.r.eq(w, "LifeCycleState", "available", fs.get("LifeCycleState"))
        if p.get("FileSystemTags"):
            self.r.tags(w, p["FileSystemTags"], fs.get("Tags"))
            name = tags_dict(p["FileSystemTags"]).get("Name")
            if name:
                self.r.eq(w, "Name (its Name tag)", name, fs.get("Name"))

    def v_EFS_MountTarget(self, k, p):
        w = self.where(k)
        efs = self.aws.efs
        mt = efs.describe_mount_targets(MountTargetId=self.phys[k])["MountTargets"][0]
        self.r.eq(w, "FileSystemId", p["FileSystemId"], mt["FileSystemId"])
        self.r.eq(w, "SubnetId", p["SubnetId"], mt["SubnetId"])
        self.r.eq(w, "LifeCycleState", "available", mt.get("LifeCycleState"))
        if "SecurityGroups" in p:
            groups = efs.describe_mount_target_security_groups(MountTargetId=mt["MountTargetId"])["SecurityGroups"]
            self.r.eq(w, "SecurityGroups", sorted(p["SecurityGroups"]), sorted(groups))

    # --- RDS
    def v_RDS_DBSubnetGroup(self, k, p):
        w = self.where(k)
        name = p.get("DBSubnetGroupName", self.phys[k])
        g = self.aws.rds.describe_db_subnet_groups(DBSubnetGroupName=name)["DBSubnetGroups"][0]
        self.r.eq(w, "DBSubnetGroupName", name.lower(), g["DBSubnetGroupName"])
        self.r.eq(w, "DBSubnetGroupDescription", p["DBSubnetGroupDescription"], g["DBSubnetGroupDescription"])
        self.r.eq(w, "SubnetIds", sorted(p["SubnetIds"]), sorted(s["SubnetIdentifier"] for s in g["Subnets"]))
        self.r.eq(w, "VpcId (the subnets' VPC)", self.site.vpc, g.get("VpcId"))

    DB_FIELDS = {
        "DBInstanceIdentifier": lambda d: d["DBInstanceIdentifier"],
        "Engine": lambda d: d.get("Engine"),
        "EngineVersion": lambda d: d.get("EngineVersion"),
        "DBInstanceClass": lambda d: d.get("DBInstanceClass"),
        "AllocatedStorage": lambda d: d.get("AllocatedStorage"),
        "StorageType": lambda d: d.get("StorageType"),
        "StorageEncrypted": lambda d: d.get("StorageEncrypted"),
        "DBSubnetGroupName": lambda d: (d.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
        "DBParameterGroupName": lambda d: [g["DBParameterGroupName"] for g in d.get("DBParameterGroups", [])],
        "AvailabilityZone": lambda d: d.get("AvailabilityZone"),
        "MultiAZ": lambda d: d.get("MultiAZ"),
        "PubliclyAccessible": lambda d: d.get("PubliclyAccessible"),
        "BackupRetentionPeriod": lambda d: d.get("BackupRetentionPeriod"),
        "CopyTagsToSnapshot": lambda d: d.get("CopyTagsToSnapshot"),
        "MasterUsername": lambda d: d.get("MasterUsername"),
        "Port": lambda d: (d.get("Endpoint") or {}).get("Port"),
    }

    def v_RDS_DBInstance(self, k, p):
        w = self.where(k)
        rds = self.aws.rds
        d = rds.describe_db_instances(DBInstanceIdentifier=self.phys[k])["DBInstances"][0]
        unchecked = []
        for prop, value in p.items():
            if prop in self.DB_FIELDS:
                expected = value
                if prop == "DBInstanceIdentifier":
                    expected = value.lower()
                if prop == "DBParameterGroupName":
                    expected = [value.lower()]
                self.r.eq(w, prop, expected, self.DB_FIELDS[prop](d))
            elif prop == "VPCSecurityGroups":
                got = sorted(g["VpcSecurityGroupId"] for g in d.get("VpcSecurityGroups", []))
                self.r.eq_or_gap(w, prop, sorted(value), got, lambda a: not set(a) & set(value),
                                 "moto's CloudFormation ignores VPCSecurityGroups (it reads VpcSecurityGroupIds)")
            elif prop == "MaxAllocatedStorage":
                self.r.eq_or_gap(w, prop, value, d.get("MaxAllocatedStorage"), None,
                                 "moto's CloudFormation ignores MaxAllocatedStorage")
            elif prop == "Tags":
                self.r.tags(w, value, d.get("TagList"))
            else:
                unchecked.append(prop)
        self.r.eq(w, "DBInstanceStatus", "available", d.get("DBInstanceStatus"))
        if unchecked:
            self.r.notes.append("%s: not visible in DescribeDBInstances: %s" % (k, ", ".join(sorted(unchecked))))

    def parameter_group(self, w, name, template_props=None):
        rds = self.aws.rds
        logical = [i for i in resources_of(self.original, "AWS::RDS::DBParameterGroup")]
        env = self.site.env(self.original, self.params)
        for i in logical:
            props = template_props or evaluate(self.original["Resources"][i]["Properties"], env)
            if props["DBParameterGroupName"].lower() != name and template_props is None:
                continue
            g = rds.describe_db_parameter_groups(DBParameterGroupName=name)["DBParameterGroups"][0]
            self.r.eq(w, "%s family" % name, props["Family"], g["DBParameterGroupFamily"])
            self.r.eq(w, "%s description" % name, props["Description"], g["Description"])
            params = paginate(rds, "describe_db_parameters", "Parameters", DBParameterGroupName=name, Source="user")
            got = {x["ParameterName"]: x.get("ParameterValue") for x in params}
            want = {kk: scalar_str(v) for kk, v in (props.get("Parameters") or {}).items()}
            self.r.eq(w, "%s parameters" % name, want, got)
            return
        self.r.fail(w, "%s is none of the template's parameter groups" % name)

    # --- IAM
    def policy_doc(self, w, what, doc):
        """A policy document as a dict. moto's CloudFormation stores inline role policies as
        Python's repr of the dict (not JSON): read it anyway, and say so."""
        if not isinstance(doc, str):
            return doc
        text = urllib.parse.unquote(doc)
        try:
            return json.loads(text)
        except ValueError:
            pass
        import ast

        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            self.r.fail(w, "%s is neither JSON nor a Python literal: %s" % (what, short(text)))
            return None
        self.r.gap(w, "%s: moto's CloudFormation stores it as Python's repr of the document, not JSON "
                   "(GetRolePolicy returns %s)" % (what, short(text, 40)))
        return value

    def v_IAM_Role(self, k, p):
        w = self.where(k)
        iam = self.aws.iam
        role = iam.get_role(RoleName=self.phys[k])["Role"]
        if "RoleName" in p:
            self.r.eq(w, "RoleName", p["RoleName"], role["RoleName"])
        self.r.eq(w, "AssumeRolePolicyDocument", p["AssumeRolePolicyDocument"],
                  self.policy_doc(w, "AssumeRolePolicyDocument", role["AssumeRolePolicyDocument"]))
        if "Description" in p:
            self.r.eq(w, "Description", p["Description"], role.get("Description"))
        self.r.eq(w, "Path", p.get("Path", "/"), role.get("Path"))
        names = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
        want = {x["PolicyName"]: x["PolicyDocument"] for x in p.get("Policies", [])}
        self.r.eq(w, "inline policy names", sorted(want), sorted(names))
        for name, doc in want.items():
            if name in names:
                got = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
                self.r.eq(w, "policy %s" % name, doc, self.policy_doc(w, "policy %s" % name, got))
        attached = [x["PolicyArn"] for x in iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]]
        self.r.eq(w, "ManagedPolicyArns", sorted(p.get("ManagedPolicyArns", [])), sorted(attached))
        if p.get("Tags"):
            self.r.tags(w, p["Tags"], iam.list_role_tags(RoleName=role["RoleName"])["Tags"])

    def v_IAM_InstanceProfile(self, k, p):
        w = self.where(k)
        prof = self.aws.iam.get_instance_profile(InstanceProfileName=self.phys[k])["InstanceProfile"]
        self.r.eq(w, "Roles", sorted(p["Roles"]), sorted(r["RoleName"] for r in prof["Roles"]))

    # --- launch templates and the hosts' Auto Scaling group
    def v_EC2_LaunchTemplate(self, k, p):
        w = self.where(k)
        ec2 = self.aws.ec2
        v = ec2.describe_launch_template_versions(LaunchTemplateId=self.phys[k], Versions=["$Latest"])
        data = v["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        for prop, value in p.get("LaunchTemplateData", {}).items():
            if prop == "UserData":
                got = data.get("UserData", "")
                if got == value:
                    self.r.ok(w, "UserData (%d bytes, as the template renders it)" % len(base64.b64decode(value)))
                else:
                    want_s = base64.b64decode(value).decode(errors="replace").splitlines()
                    got_s = base64.b64decode(got).decode(errors="replace").splitlines() if got else []
                    first = next((i for i, (a, b) in enumerate(zip(want_s, got_s)) if a != b), min(len(want_s), len(got_s)))
                    self.r.fail(w, "UserData differs at line %d: template %r, moto %r" % (
                        first + 1, want_s[first] if first < len(want_s) else None,
                        got_s[first] if first < len(got_s) else None))
            elif prop in ("SecurityGroupIds", "SecurityGroups"):
                self.r.eq(w, prop, sorted(value), sorted(data.get(prop, [])))
            else:
                self.r.eq(w, prop, value, data.get(prop))
        cond_keys = set(self.original["Resources"].get(k, {}).get("Properties", {}).get("LaunchTemplateData", {})) - set(
            p.get("LaunchTemplateData", {}))
        for prop in sorted(cond_keys):
            self.r.eq(w, "%s (AWS::NoValue here)" % prop, None, data.get(prop))

    def v_AutoScaling_AutoScalingGroup(self, k, p):
        w = self.where(k)
        asg = self.aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[self.phys[k]])
        g = asg["AutoScalingGroups"][0]
        for prop in ("MinSize", "MaxSize", "DesiredCapacity"):
            if prop in p:
                self.r.eq(w, prop, p[prop], g.get(prop))
        if "VPCZoneIdentifier" in p:
            self.r.eq(w, "VPCZoneIdentifier", sorted(p["VPCZoneIdentifier"]),
                      sorted(x for x in g.get("VPCZoneIdentifier", "").split(",") if x))
        lt = p.get("LaunchTemplate")
        if lt:
            self.r.eq(w, "LaunchTemplate", {"LaunchTemplateId": lt["LaunchTemplateId"], "Version": lt["Version"]},
                      {"LaunchTemplateId": g.get("LaunchTemplate", {}).get("LaunchTemplateId"),
                       "Version": g.get("LaunchTemplate", {}).get("Version")})
        want_tags = {(t["Key"], t["Value"], norm(t.get("PropagateAtLaunch", False))) for t in p.get("Tags", [])}
        got_tags = {(t["Key"], t["Value"], norm(t.get("PropagateAtLaunch", False))) for t in g.get("Tags", [])}
        self.r.eq(w, "tags (with PropagateAtLaunch)", sorted(want_tags), sorted(want_tags & got_tags))
        instances = g.get("Instances", [])
        desired = norm(p.get("DesiredCapacity", p.get("MinSize")))
        self.r.eq(w, "instances InService", desired, sum(1 for i in instances if i.get("LifecycleState") == "InService"))
        if not (lt and instances):
            return
        data = self.aws.ec2.describe_launch_template_versions(
            LaunchTemplateId=lt["LaunchTemplateId"], Versions=[lt["Version"]])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        ids = [i["InstanceId"] for i in instances]
        for res in self.aws.ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            for inst in res["Instances"]:
                wi = "%s instance %s" % (k, inst["InstanceId"])
                self.r.eq(wi, "ImageId (launch template)", data.get("ImageId"), inst.get("ImageId"))
                self.r.eq(wi, "InstanceType (launch template)", data.get("InstanceType"), inst.get("InstanceType"))
                self.r.eq(wi, "SubnetId in VPCZoneIdentifier", True, inst.get("SubnetId") in p.get("VPCZoneIdentifier", []))
                self.r.eq(wi, "security groups (launch template)", sorted(data.get("SecurityGroupIds", [])),
                          sorted(x["GroupId"] for x in inst.get("SecurityGroups", [])))
                prop_tags = [{"Key": a, "Value": b} for a, b, c in want_tags if c]
                self.r.tags(wi, prop_tags, inst.get("Tags"))
                if "IamInstanceProfile" in data:
                    self.r.eq_or_gap(wi, "IamInstanceProfile (launch template)", data["IamInstanceProfile"].get("Arn"),
                                     (inst.get("IamInstanceProfile") or {}).get("Arn"), None,
                                     "moto's Auto Scaling does not give its instances the launch template's profile")
                if "MetadataOptions" in data:
                    want = {x: data["MetadataOptions"][x] for x in data["MetadataOptions"]}
                    got = {x: (inst.get("MetadataOptions") or {}).get(x) for x in want}
                    self.r.eq_or_gap(wi, "MetadataOptions (launch template)", want, got,
                                     lambda a: a != want and a.get("HttpTokens") == "optional",
                                     "moto's Auto Scaling does not apply the launch template's MetadataOptions")
        policy = self.t["Resources"][k].get("CreationPolicy", {}).get("ResourceSignal")
        if policy:
            signals = self.aws.shim("/_shim/signals")
            count = evaluate(policy.get("Count", 1), self.env)
            if signals is None:
                self.r.notes.append("%s: CreationPolicy (%s signals) - no shim, signals not counted" % (k, count))
            else:
                mine = [s for s in signals.get("signals", []) if s.get("stack") in (self.out.name, self.out.stack_id)]
                self.r.gap(w, "CreationPolicy ResourceSignal Count %s, Timeout %s: moto ignores it, the group completed "
                           "with %d SignalResource calls (AWS waits for the signals)" % (count, policy.get("Timeout"), len(mine)))

    # --- what this checker created through the APIs in the stack's place
    def standins(self):
        sm = self.aws.secretsmanager
        env = self.site.env(self.original, self.params)
        for (cluster, logical), (arn, name) in sorted(self.ctx.secrets.items()):
            if cluster != self.params["ClusterName"]:
                continue
            w = "%s (AWS::SecretsManager::Secret, through the API)" % logical
            props = evaluate(self.original["Resources"][logical]["Properties"], env)
            d = sm.describe_secret(SecretId=props["Name"])
            self.r.eq(w, "Name", props["Name"], d["Name"])
            self.r.eq(w, "ARN", arn, d["ARN"])
            if "Description" in props:
                self.r.eq(w, "Description", props["Description"], d.get("Description"))
            if props.get("Tags"):
                self.r.tags(w, props["Tags"], d.get("Tags"))
            value = sm.get_secret_value(SecretId=arn)["SecretString"]
            gen = props.get("GenerateSecretString")
            if gen:
                obj = json.loads(value)
                tmpl = json.loads(gen["SecretStringTemplate"])
                self.r.eq(w, "SecretStringTemplate fields", tmpl, {x: obj.get(x) for x in tmpl})
                pw = obj.get(gen["GenerateStringKey"], "")
                self.r.eq(w, "%s length" % gen["GenerateStringKey"], gen.get("PasswordLength", 32), len(pw))
                if norm(gen.get("ExcludePunctuation", False)):
                    self.r.eq(w, "%s without punctuation" % gen["GenerateStringKey"], True,
                              not re.search(r"[!-/:-@\[-`{-~]", pw))
                if not norm(gen.get("IncludeSpace", False)):
                    self.r.eq(w, "%s without spaces" % gen["GenerateStringKey"], True, " " not in pw)
        for (cluster, logical), name in sorted(self.ctx.param_groups.items()):
            if cluster == self.params["ClusterName"]:
                self.parameter_group("%s (AWS::RDS::DBParameterGroup, through the API)" % logical, name)

    def outputs(self):
        w = "stack %s outputs" % self.out.name
        for k, o in self.t.get("Outputs", {}).items():
            try:
                want = scalar_str(evaluate(o["Value"], self.env))
            except Unresolved as e:
                self.r.notes.append("output %s not checked: %s" % (k, e))
                continue
            self.r.eq(w, k, want, self.out.outputs.get(k))
        extra = sorted(set(self.out.outputs) - set(self.t.get("Outputs", {})))
        self.r.eq(w, "outputs not in the template", [], extra)


# --------------------------------------------------------------------------------------------
# main


def check_url(url):
    u = urllib.parse.urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        die("usage: cfn_moto.py http://127.0.0.1:PORT (got %r)" % url, 2)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        die("refusing %s: only a loopback emulator (127.0.0.1) is contacted" % url, 2)
    return "%s://%s" % (u.scheme, u.netloc)


def isolate_environment():
    """Nothing but the emulator: no proxies, no AWS profile or IMDS lookups."""
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        os.environ.pop(k, None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    for k in list(os.environ):
        if k.startswith("AWS_ENDPOINT_URL") or k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            del os.environ[k]


def main(argv):
    global TEMPLATE
    argv = list(argv)
    if "--template" in argv:
        i = argv.index("--template")
        if i + 1 >= len(argv):
            sys.stderr.write(__doc__)
            return 2
        TEMPLATE = os.path.abspath(argv[i + 1])
        del argv[i:i + 2]
    args = [a for a in argv if not a.startswith("-")]
    verbose = "-v" in argv or "--verbose" in argv
    if len(args) != 1 or "-h" in argv or "--help" in argv:
        sys.stderr.write(__doc__)
        return 2
    url = check_url(args[0])
    isolate_environment()
    t_start = time.monotonic()
    report = Report(verbose)

    try:
        import boto3  # noqa: F401
    except ImportError:
        die("boto3 is missing (pip install -r scripts/requirements-ci.txt)")
    aws = Aws(url)
    health = aws.shim("/_shim/health")
    try:
        aws.sts.get_caller_identity()
    except Exception as e:
        die("the emulator at %s does not answer: %s (start it: python3 scripts/aws-emulator PORT)" % (url, error_text(e)))

    original = load_template(TEMPLATE)
    run_id = "%06x" % ((int(time.time() * 1000) ^ os.getpid()) & 0xFFFFFF)
    print("cfn_moto: %s in moto's CloudFormation at %s%s (run %s)"
          % (os.path.relpath(TEMPLATE, ROOT), url, "" if health else " (no shim: /_shim/* absent)", run_id))

    site = Site(aws, original, run_id)
    ctx = Context(aws, site, original)
    print("prerequisites: VPC %s %s, subnets %s %s (%s) and %s %s (%s), route tables %s (+ %s for probes), "
          "ImageId %s -> %s" % (
              site.vpc, VPC_CIDR, site.subnet["SubnetId"], SUBNET_CIDR, site.subnet["AvailabilityZone"],
              site.second["SubnetId"], SECOND_SUBNET_CIDR, site.second["AvailabilityZone"], ", ".join(site.tables),
              site.probe_table, site.image_path, site.image_id))

    cluster = "cfnmoto-" + run_id
    params = site.params(cluster)
    errors = validate_params(original, params)
    if errors:
        for e in errors:
            print("  FAIL parameter " + e)
        return 1

    # 1. every step, proven on probe stacks made of the template's own resources
    print("probes (the template's own resources in small stacks; A = as written, B = with the step):")
    prober = Prober(aws, site, run_id)
    claims = []
    failed_claims = []
    for n, step in enumerate(STEPS):
        try:
            if not step.applies(derive(original, params, ctx, upto=n)):
                continue
            prober.begin()
            try:
                lines = step.probe(derive(original, prober.params, ctx, upto=n), ctx, prober)
            finally:
                prober.cleanup()
            claims.append((step, lines))
            print("  [%s] %s" % (step.name, step.title))
            for line in lines:
                print("      " + line)
        except (ClaimError, DeployError, Unresolved) as e:
            failed_claims.append((step, str(e)))
            print("  [%s] FAIL %s" % (step.name, e))
        except Exception as e:  # an API call of the probe itself failed
            failed_claims.append((step, error_text(e)))
            print("  [%s] FAIL %s" % (step.name, error_text(e)))

    # 2. the derived template
    log = []
    try:
        derived = derive(original, params, ctx, log=log)
    except (DeployError, Unresolved) as e:
        print("FAIL deriving the template: %s" % e)
        return 1
    stack_name = "cfn-moto-" + run_id
    print("deploying %s: %d resources, %d outputs, %d bytes of JSON" % (
        stack_name, len(derived["Resources"]), len(derived.get("Outputs", {})),
        len(json.dumps(derived, separators=(",", ":"), default=str))))
    out = deploy(aws, stack_name, derived, params, progress=True)
    if not out.complete:
        print("FAIL stack %s: %s" % (stack_name, out.summary()))
        for ev in reversed(out.events):
            if "FAILED" in ev.get("ResourceStatus", "") or ev.get("ResourceStatusReason"):
                print("  event %s %s %s: %s" % (ev.get("LogicalResourceId"), ev.get("ResourceType"),
                                                 ev.get("ResourceStatus"), ev.get("ResourceStatusReason")))
        print("  finding the resource(s) moto fails on (each with what it references, in its own stack):")
        prober.begin()
        try:
            for k, why in culprits(derived, prober):
                print("  - %s (%s): %s" % (k, derived["Resources"].get(k, {}).get("Type"), why))
        finally:
            prober.cleanup()
        return 1
    print("  %s in %.2f s, %d resources" % (out.status, out.seconds, len(out.resources)))

    # 3. what it made
    print("verifying with describe calls:")
    v = Verifier(aws, site, ctx, derived, original, params, out, report)
    v.run()
    v.routes_cover_tables()

    # 3b. the same template with RouterHa (second router, second overlay subnet), its own cluster
    ha_params = site.ha_params(cluster + "-ha", site.ha_tables)
    errors = validate_params(original, ha_params)
    if errors:
        for e in errors:
            print("  FAIL parameter (RouterHa) " + e)
        return 1
    ha_log = []
    try:
        ha_derived = derive(original, ha_params, ctx, log=ha_log)
    except (DeployError, Unresolved) as e:
        print("FAIL deriving the RouterHa template: %s" % e)
        return 1
    ha_name = stack_name + "-ha"
    print("deploying %s (RouterHa=true, second overlay subnet %s): %d resources, %d outputs" % (
        ha_name, site.overlay2["SubnetId"], len(ha_derived["Resources"]), len(ha_derived.get("Outputs", {}))))
    ha_out = deploy(aws, ha_name, ha_derived, ha_params, progress=True)
    if not ha_out.complete:
        print("FAIL stack %s: %s" % (ha_name, ha_out.summary()))
        return 1
    print("  %s in %.2f s, %d resources" % (ha_out.status, ha_out.seconds, len(ha_out.resources)))
    print("verifying the RouterHa stack with describe calls:")
    ha_v = Verifier(aws, site, ctx, ha_derived, original, ha_params, ha_out, report)
    ha_v.run()
    ha_v.routes_cover_tables()
    for k in ("RouterInterface2", "MountTarget2", "Router2LaunchTemplate"):
        report.eq("stack %s" % ha_name, "%s created (RouterHa)" % k, True, k in ha_out.resources)
    for k in ("RouterInterface2", "MountTarget2", "Router2LaunchTemplate"):
        report.eq("stack %s" % stack_name, "%s left out (one zone)" % k, False, k in out.resources)
    log += [x for x in ha_log if x[0] == "condition"]

    # 3c. Flood=evpn with RouterHa: no transit gateway chain at all, TCP 179 from both subnets,
    # the route reflectors (both router ENIs' addresses) in every launch template's user data
    evpn_params = site.evpn_params(cluster + "-evpn", site.evpn_tables)
    errors = validate_params(original, evpn_params)
    if errors:
        for e in errors:
            print("  FAIL parameter (Flood=evpn) " + e)
        return 1
    evpn_log = []
    try:
        evpn_derived = derive(original, evpn_params, ctx, log=evpn_log)
    except (DeployError, Unresolved) as e:
        print("FAIL deriving the Flood=evpn template: %s" % e)
        return 1
    evpn_name = stack_name + "-evpn"
    tgw_types = [k for k in evpn_derived["Resources"]
                 if str(evpn_derived["Resources"][k].get("Type", "")).startswith("AWS::EC2::TransitGateway")]
    report.eq("stack %s" % evpn_name, "no Transit Gateway resource left by the conditions (Flood=evpn)", [], tgw_types)
    print("deploying %s (Flood=evpn, RouterHa=true): %d resources, %d outputs" % (
        evpn_name, len(evpn_derived["Resources"]), len(evpn_derived.get("Outputs", {}))))
    evpn_out = deploy(aws, evpn_name, evpn_derived, evpn_params, progress=True)
    if not evpn_out.complete:
        print("FAIL stack %s: %s" % (evpn_name, evpn_out.summary()))
        return 1
    print("  %s in %.2f s, %d resources" % (evpn_out.status, evpn_out.seconds, len(evpn_out.resources)))
    print("verifying the Flood=evpn stack with describe calls:")
    evpn_v = Verifier(aws, site, ctx, evpn_derived, original, evpn_params, evpn_out, report)
    evpn_v.run()
    evpn_v.routes_cover_tables()
    where = "stack %s" % evpn_name
    for k in ("RouterInterface2", "MountTarget2", "Router2LaunchTemplate"):
        report.eq(where, "%s created (RouterHa)" % k, True, k in evpn_out.resources)
    for k in ("TransitGatewayId", "MulticastDomainId"):
        report.eq(where, "output %s left out (Flood=evpn)" % k, False, k in evpn_derived.get("Outputs", {}))
    vtep = aws.ec2.describe_security_groups(GroupIds=[evpn_out.resources["VtepSecurityGroup"][1]])["SecurityGroups"][0]
    rules = sorted((p.get("IpProtocol"), p.get("FromPort"), r["CidrIp"])
                   for p in vtep["IpPermissions"] for r in p.get("IpRanges", []))
    report.eq(where, "vtep rules: VXLAN and BGP from both subnets, no IGMP", sorted([
        ("tcp", 179, SUBNET_CIDR), ("tcp", 179, SECOND_OVERLAY_SUBNET_CIDR),
        ("udp", 4789, SUBNET_CIDR), ("udp", 4789, SECOND_OVERLAY_SUBNET_CIDR)]), rules)
    ips = [aws.ec2.describe_network_interfaces(NetworkInterfaceIds=[evpn_out.resources[k][1]])
           ["NetworkInterfaces"][0]["PrivateIpAddress"] for k in ("RouterInterface", "RouterInterface2")]
    for k in ("RouterLaunchTemplate", "Router2LaunchTemplate", "ManagementLaunchTemplate", "HostLaunchTemplate"):
        lt = aws.ec2.describe_launch_template_versions(LaunchTemplateId=evpn_out.resources[k][1], Versions=["$Latest"])
        data = base64.b64decode(lt["LaunchTemplateVersions"][0]["LaunchTemplateData"]["UserData"]).decode()
        report.eq(where, "%s: overlayd.toml names both route reflectors %s" % (k, ", ".join(ips)), True,
                  'evpn_reflectors = ["%s", "%s"]' % tuple(ips) in data and 'flood = "evpn"' in data
                  and "group = " not in data)
    log += [x for x in evpn_log if x[0] == "condition"]

    # 4. the summary
    fates = getattr(STEPS[0], "fates", {})
    print()
    print("dropped from the stack:")
    for kind, k, rtype, why in log:
        if kind == "resource":
            print("  - %s (%s): %s" % (k, rtype, why))
            if k in fates:
                print("      probe: %s" % fates[k])
    for kind, k, rtype, why in log:
        if kind == "output":
            print("  - output %s: %s" % (k, why))
    print("adapted:")
    for kind, k, rtype, why in log:
        if kind in ("condition", "dependson", "parameter", "rule", "transform", "foreach", "getatt", "dynamic"):
            print("  - %s: %s" % (k, why))
    print("created through the service APIs in the stack's place (from the template's own properties):")
    for kind, k, rtype, why in log:
        if kind == "standin":
            print("  - %s (%s): %s" % (k, rtype, why))
    print("checked (%d checks):" % report.passed)
    for where in sorted(report.per_resource):
        ok, bad, gaps = report.per_resource[where]
        print("  %-64s %3d ok%s%s" % (where, ok, ", %d FAILED" % bad if bad else "", ", %d moto gaps" % gaps if gaps else ""))
    if report.gaps:
        print("moto gaps seen in what it created (not failures; the template is right, moto drops it):")
        for where, what in report.gaps:
            print("  - %s: %s" % (where, what))
    for note in report.notes:
        print("note: " + note)
    failures = len(report.failures) + len(failed_claims)
    elapsed = time.monotonic() - t_start
    if failures:
        print("FAIL: %d mismatch(es)%s in %.1f s" % (
            len(report.failures), ", %d unproven step(s)" % len(failed_claims) if failed_claims else "", elapsed))
        for step, e in failed_claims:
            print("  step %s: %s" % (step.name, e))
        for where, what in report.failures:
            print("  %s: %s" % (where, what))
        return 1
    print("left in the emulator: stack %s, VPC %s and what the probes made (unique names: runs do not collide)"
          % (stack_name, site.vpc))
    print("OK: %d checks, %d moto gaps, %d probe stacks, in %.1f s" % (report.passed, len(report.gaps),
                                                                        prober.total, elapsed))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(1)
    except SystemExit:
        raise
    except DeployError as e:
        die(str(e))
    except Exception:
        traceback.print_exc()
        die("internal error (see the traceback above)")
