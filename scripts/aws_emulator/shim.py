"""AWS emulator: moto server behind a shim.

The shim is WSGI middleware in front of moto's own WSGI application (the one
`moto_server` runs). It

* implements the Transit Gateway multicast-domain EC2 actions that moto lacks,
  with the AWS Query/XML request and response shapes and AWS state rules;
* adds the state rules moto does not enforce around those resources (a TGW with
  a multicast domain or attachments cannot be deleted, an attachment that is
  associated with a multicast domain cannot be deleted);
* counts every mutating call (any action whose name does not start with
  Describe/Get/List/Search) for EC2, RDS (Query), Secrets Manager (JSON 1.1)
  and EFS (REST JSON);
* injects faults on request, so that tests can fail each mutating step in turn.

Control endpoints (never forwarded to moto):

  GET  /_shim/calls[?all=1]          -> {"calls": [{"service":..,"action":..,"failed":bool,
                                        "mutating":bool, "access_key":..}, ...]}
                                        (mutating calls only unless all=1)
  POST /_shim/reset                  -> clears the call log and pending faults
  POST /_shim/fail?action=X&count=N  -> the next N calls of action X fail
                                        (AWS-shaped InternalError, HTTP 500);
                                        `when=after` lets moto execute the call
                                        first and then answers with the error
                                        (a lost response).
  GET  /_shim/instances?region=R     -> {"instances": [{"instance_id", "private_ip", "state",
                                        "tags": {..}, "http_tokens", "hop_limit",
                                        "instance_metadata_tags", "user_data", ...}]}
                                        moto's EC2 instances as the lab's IMDSv2 emulator
                                        needs them (instance metadata is not an AWS API,
                                        so moto has no call that returns it).
  GET  /_shim/routes?region=R&cidr=C -> {"routes": [{"table", "target", "target_ip"}]}: every
                                        route table's route to C, its target (ENI or instance
                                        id) and that target's private address, for the lab's
                                        VPC router to follow (ReplaceRoute moves it, as on AWS).
  GET  /_shim/signals                -> {"signals": [{"stack", "resource", "unique_id",
                                        "status", "time", "access_key", "verified"}, ...]}
                                        CloudFormation SignalResource calls (moto has none):
                                        answered as AWS does, recorded here.
  POST /_shim/stack?name=S&resources=A,B -> declares stack S with resources A, B: signals for
                                        another stack or resource of it are then refused
                                        (ValidationError); with no stack declared all pass.
  POST /_shim/igmp?domain=D&group=G&eni=E[&leave=1] -> what the transit gateway learns from an
                                        IGMPv2 report (or leave) of interface E for group G: E
                                        becomes (or stops being) a member of G in domain D with
                                        memberType "igmp", as SearchTransitGatewayMulticastGroups
                                        then lists it (nodes join by IGMP, which no AWS API
                                        does). Refused (409) when D has IGMPv2 off or E's subnet
                                        is not associated with D, as a real TGW ignores reports.
  POST /_shim/credentials?key=K&secret=S -> registers a secret key (the lab's IMDS emulator
                                        does for what it hands out): SignalResource calls
                                        signed with K must then carry a correct SigV4
                                        signature (else 403 SignatureDoesNotMatch).
"""

import datetime
import hashlib
import hmac
import itertools
import json
import re
import secrets
import sys
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
DEFAULT_ACCOUNT = "123456789012"
READ_PREFIXES = ("Describe", "Get", "List", "Search")

MULTICAST_ACTIONS = {
    "CreateTransitGatewayMulticastDomain",
    "DescribeTransitGatewayMulticastDomains",
    "DeleteTransitGatewayMulticastDomain",
    "AssociateTransitGatewayMulticastDomain",
    "DisassociateTransitGatewayMulticastDomain",
    "GetTransitGatewayMulticastDomainAssociations",
    "RegisterTransitGatewayMulticastGroupMembers",
    "DeregisterTransitGatewayMulticastGroupMembers",
    "RegisterTransitGatewayMulticastGroupSources",
    "DeregisterTransitGatewayMulticastGroupSources",
    "SearchTransitGatewayMulticastGroups",
}


def is_mutating(action):
    return not action.startswith(READ_PREFIXES)


class AwsError(Exception):
    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# --------------------------------------------------------------------------
# request classification


EFS_ROUTES = [
    # (method, path regex, action)
    ("POST", r"^/2015-02-01/file-systems/?$", "CreateFileSystem"),
    ("GET", r"^/2015-02-01/file-systems/?$", "DescribeFileSystems"),
    ("PUT", r"^/2015-02-01/file-systems/[^/]+/lifecycle-configuration$", "PutLifecycleConfiguration"),
    ("GET", r"^/2015-02-01/file-systems/[^/]+/lifecycle-configuration$", "DescribeLifecycleConfiguration"),
    ("PUT", r"^/2015-02-01/file-systems/[^/]+/backup-policy$", "PutBackupPolicy"),
    ("GET", r"^/2015-02-01/file-systems/[^/]+/backup-policy$", "DescribeBackupPolicy"),
    ("PUT", r"^/2015-02-01/file-systems/[^/]+$", "UpdateFileSystem"),
    ("DELETE", r"^/2015-02-01/file-systems/[^/]+$", "DeleteFileSystem"),
    ("POST", r"^/2015-02-01/mount-targets/?$", "CreateMountTarget"),
    ("GET", r"^/2015-02-01/mount-targets/?$", "DescribeMountTargets"),
    ("GET", r"^/2015-02-01/mount-targets/[^/]+/security-groups$", "DescribeMountTargetSecurityGroups"),
    ("PUT", r"^/2015-02-01/mount-targets/[^/]+/security-groups$", "ModifyMountTargetSecurityGroups"),
    ("DELETE", r"^/2015-02-01/mount-targets/[^/]+$", "DeleteMountTarget"),
    ("POST", r"^/2015-02-01/resource-tags/[^/]+$", "TagResource"),
    ("DELETE", r"^/2015-02-01/resource-tags/[^/]+$", "UntagResource"),
    ("GET", r"^/2015-02-01/resource-tags/[^/]+$", "ListTagsForResource"),
    ("POST", r"^/2015-02-01/access-points/?$", "CreateAccessPoint"),
    ("GET", r"^/2015-02-01/access-points/?$", "DescribeAccessPoints"),
    ("DELETE", r"^/2015-02-01/access-points/[^/]+$", "DeleteAccessPoint"),
]


def signing_scope(environ):
    """(region, service) from the SigV4 Authorization header, if any."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/aws4_request", auth)
    if m:
        return m.group(1), m.group(2)
    return "us-east-1", None


def classify(environ, body):
    """Return (protocol, service, action, params) for a request."""
    region, service = signing_scope(environ)
    target = environ.get("HTTP_X_AMZ_TARGET")
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")
    if target:
        prefix, _, action = target.rpartition(".")
        svc = service or prefix.lower()
        return "json", svc, action, {}
    if path.startswith("/2015-02-01/"):
        for m, rx, action in EFS_ROUTES:
            if m == method and re.match(rx, path):
                return "rest-json", "elasticfilesystem", action, {}
        return "rest-json", "elasticfilesystem", "%s %s" % (method, path), {}
    params = {}
    ctype = environ.get("CONTENT_TYPE", "")
    if body and "x-www-form-urlencoded" in ctype:
        params = dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    qs = environ.get("QUERY_STRING", "")
    if qs:
        for k, v in urllib.parse.parse_qsl(qs, keep_blank_values=True):
            params.setdefault(k, v)
    action = params.get("Action")
    if action:
        svc = service or ("ec2" if params.get("Version") == "2016-11-15" else "unknown")
        return "query", svc, action, params
    return None, service, None, params


def error_response(protocol, service, code, message, status):
    rid = request_id()
    if protocol == "query" and service == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            "<Code>%s</Code><Message>%s</Message></Error></Errors>"
            "<RequestID>%s</RequestID></Response>" % (escape(code), escape(message), rid)
        )
        return status, [("Content-Type", "text/xml")], body.encode()
    if protocol == "query":
        kind = "Receiver" if status >= 500 else "Sender"
        body = (
            '<ErrorResponse xmlns="http://%s.amazonaws.com/doc/"><Error><Type>%s</Type>'
            "<Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId>"
            "</ErrorResponse>" % (service, kind, escape(code), escape(message), rid)
        )
        return status, [("Content-Type", "text/xml")], body.encode()
    if protocol == "json":
        body = json.dumps({"__type": code, "message": message})
        return status, [("Content-Type", "application/x-amz-json-1.1")], body.encode()
    body = json.dumps({"ErrorCode": code, "Message": message})
    return status, [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)], body.encode()


def request_id():
    return "%08x-%04x-%04x-%04x-%012x" % (
        secrets.randbits(32),
        secrets.randbits(16),
        secrets.randbits(16),
        secrets.randbits(16),
        secrets.randbits(48),
    )


# --------------------------------------------------------------------------
# Query helpers


def indexed_list(params, prefix):
    """Values of a flattened EC2 query list: Prefix.1, Prefix.2, ..."""
    out = []
    for i in itertools.count(1):
        key = "%s.%d" % (prefix, i)
        if key not in params:
            break
        out.append(params[key])
    return out


def parse_filters(params):
    filters = []
    for i in itertools.count(1):
        name = params.get("Filter.%d.Name" % i)
        if name is None:
            break
        filters.append((name, indexed_list(params, "Filter.%d.Value" % i)))
    return filters


def parse_tag_specs(params, resource_type):
    tags = []
    for i in itertools.count(1):
        rt = params.get("TagSpecification.%d.ResourceType" % i)
        if rt is None:
            break
        if rt != resource_type:
            raise AwsError(
                "InvalidParameterValue",
                "'%s' is not a valid taggable resource type for this operation." % rt,
            )
        for j in itertools.count(1):
            k = params.get("TagSpecification.%d.Tag.%d.Key" % (i, j))
            if k is None:
                break
            tags.append((k, params.get("TagSpecification.%d.Tag.%d.Value" % (i, j), "")))
    return tags


def el(name, value):
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return "<%s>%s</%s>" % (name, escape(str(value)), name)


def ec2_response(action, inner):
    body = '<?xml version="1.0" encoding="UTF-8"?>\n<%sResponse xmlns="%s"><requestId>%s</requestId>%s</%sResponse>' % (
        action,
        EC2_NS,
        request_id(),
        inner,
        action,
    )
    return 200, [("Content-Type", "text/xml;charset=UTF-8")], body.encode()


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --------------------------------------------------------------------------
# multicast domain state


class Domain:
    def __init__(self, account, region, tgw_id, options, tags):
        self.id = "tgw-mcast-domain-" + secrets.token_hex(9)[:17]
        self.account = account
        self.region = region
        self.tgw_id = tgw_id
        self.options = options
        self.tags = tags
        self.state = "pending"
        self.created = now_iso()
        # subnet id -> {"attachment":, "vpc":, "state":}
        self.associations = {}
        # (group ip, eni) -> {"member": bool, "source": bool}
        self.groups = {}

    @property
    def arn(self):
        return "arn:aws:ec2:%s:%s:transit-gateway-multicast-domain/%s" % (self.region, self.account, self.id)

    def advance(self):
        """States move on one step each time they are read, like AWS's async transitions."""
        if self.state == "pending":
            self.state = "available"
        elif self.state == "deleting":
            self.state = "deleted"
        for subnet, a in list(self.associations.items()):
            if a["state"] == "associating":
                a["state"] = "associated"
            elif a["state"] == "disassociating":
                del self.associations[subnet]
                for key in [k for k, v in self.groups.items() if v["subnet"] == subnet]:
                    del self.groups[key]

    def xml(self):
        tags = "".join("<item>%s%s</item>" % (el("key", k), el("value", v)) for k, v in self.tags)
        opts = "".join(el(k[0].lower() + k[1:], v) for k, v in self.options.items())
        return (
            el("transitGatewayMulticastDomainId", self.id)
            + el("transitGatewayId", self.tgw_id)
            + el("transitGatewayMulticastDomainArn", self.arn)
            + el("ownerId", self.account)
            + "<options>%s</options>" % opts
            + el("state", self.state)
            + el("creationTime", self.created)
            + "<tagSet>%s</tagSet>" % tags
        )


class MulticastState:
    def __init__(self, moto_app):
        self.moto_app = moto_app
        self.lock = threading.RLock()
        self.domains = {}  # id -> Domain

    def reset(self):
        with self.lock:
            self.domains.clear()

    # ---- consulting moto --------------------------------------------------

    def moto_query(self, region, params):
        """Run an EC2 Query call against moto in-process (not counted, not faulted)."""
        from werkzeug.test import EnvironBuilder

        body = urllib.parse.urlencode(dict(params, Version="2016-11-15"))
        builder = EnvironBuilder(
            path="/",
            method="POST",
            data=body,
            content_type="application/x-www-form-urlencoded",
            headers={
                "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20200101/%s/ec2/aws4_request, "
                "SignedHeaders=host, Signature=0" % region,
                "Host": "ec2.%s.amazonaws.com" % region,
            },
        )
        environ = builder.get_environ()
        status_holder = {}

        def start_response(status, headers, exc_info=None):
            status_holder["status"] = status

        chunks = self.moto_app(environ, start_response)
        data = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        root = ET.fromstring(data)
        for e in root.iter():
            if "}" in e.tag:
                e.tag = e.tag.split("}", 1)[1]
        return root

    def tgw(self, region, tgw_id):
        root = self.moto_query(
            region, {"Action": "DescribeTransitGateways", "TransitGatewayIds.1": tgw_id}
        )
        for item in root.findall("./transitGatewaySet/item"):
            if item.findtext("transitGatewayId") == tgw_id:
                return {
                    "state": item.findtext("state"),
                    "multicast": item.findtext("options/multicastSupport"),
                    "owner": item.findtext("ownerId"),
                }
        return None

    def attachments(self, region, filters):
        params = {"Action": "DescribeTransitGatewayAttachments"}
        for i, (name, values) in enumerate(filters, 1):
            params["Filter.%d.Name" % i] = name
            for j, v in enumerate(values, 1):
                params["Filter.%d.Value.%d" % (i, j)] = v
        root = self.moto_query(region, params)
        out = []
        for item in root.findall("./transitGatewayAttachments/item"):
            out.append(
                {
                    "id": item.findtext("transitGatewayAttachmentId"),
                    "tgw": item.findtext("transitGatewayId"),
                    "state": item.findtext("state"),
                    "resource_type": item.findtext("resourceType"),
                    "resource_id": item.findtext("resourceId"),
                    "owner": item.findtext("resourceOwnerId"),
                }
            )
        return out

    def vpc_attachment_subnets(self, region, attachment_id):
        root = self.moto_query(
            region,
            {
                "Action": "DescribeTransitGatewayVpcAttachments",
                "TransitGatewayAttachmentIds.1": attachment_id,
            },
        )
        for item in root.findall("./transitGatewayVpcAttachments/item"):
            if item.findtext("transitGatewayAttachmentId") == attachment_id:
                return [s.text for s in item.findall("./subnetIds/item")]
        return []

    def eni_subnet(self, region, eni_id):
        root = self.moto_query(
            region, {"Action": "DescribeNetworkInterfaces", "NetworkInterfaceId.1": eni_id}
        )
        for item in root.findall("./networkInterfaceSet/item"):
            if item.findtext("networkInterfaceId") == eni_id:
                return item.findtext("subnetId")
        return None

    # ---- helpers -------------------------------------------------------------

    def live(self, account, region):
        return [
            d
            for d in self.domains.values()
            if d.account == account and d.region == region and d.state != "deleted"
        ]

    def domain(self, account, region, domain_id, need_available=True):
        if not domain_id:
            raise AwsError("MissingParameter", "The request must contain the parameter TransitGatewayMulticastDomainId")
        d = self.domains.get(domain_id)
        if d is None or d.account != account or d.region != region or d.state == "deleted":
            raise AwsError(
                "InvalidTransitGatewayMulticastDomainId.NotFound",
                "Transit Gateway Multicast Domain %s was deleted or does not exist." % domain_id,
            )
        if need_available and d.state != "available":
            raise AwsError(
                "IncorrectState",
                "Transit Gateway Multicast Domain %s is in invalid state %s." % (domain_id, d.state),
            )
        return d

    # ---- actions -------------------------------------------------------------

    def handle(self, account, region, action, params):
        with self.lock:
            for d in self.domains.values():
                if action.startswith(READ_PREFIXES):
                    d.advance()
            return getattr(self, "do_" + action)(account, region, action, params)

    def do_CreateTransitGatewayMulticastDomain(self, account, region, action, p):
        tgw_id = p.get("TransitGatewayId")
        if not tgw_id:
            raise AwsError("MissingParameter", "The request must contain the parameter TransitGatewayId")
        tgw = self.tgw(region, tgw_id)
        if tgw is None:
            raise AwsError("InvalidTransitGatewayID.NotFound", "Transit Gateway %s was deleted or does not exist." % tgw_id)
        if tgw["state"] != "available":
            raise AwsError("IncorrectState", "Transit Gateway %s is in invalid state %s." % (tgw_id, tgw["state"]))
        if (tgw["multicast"] or "disable") != "enable":
            raise AwsError(
                "InvalidParameterValue",
                "Transit Gateway %s does not have multicast support enabled." % tgw_id,
            )
        options = {}
        for name in ("Igmpv2Support", "StaticSourcesSupport", "AutoAcceptSharedAssociations"):
            v = p.get("Options." + name, "disable")
            if v not in ("enable", "disable"):
                raise AwsError("InvalidParameterValue", "Invalid value '%s' for Options.%s." % (v, name))
            options[name] = v
        if options["Igmpv2Support"] == "enable" and options["StaticSourcesSupport"] == "enable":
            raise AwsError(
                "InvalidParameterCombination",
                "Igmpv2Support and StaticSourcesSupport cannot both be enabled.",
            )
        if len([d for d in self.live(account, region) if d.tgw_id == tgw_id]) >= 20:
            raise AwsError("TransitGatewayMulticastDomainLimitExceeded", "Too many multicast domains for %s." % tgw_id)
        tags = parse_tag_specs(p, "transit-gateway-multicast-domain")
        d = Domain(account, region, tgw_id, options, tags)
        self.domains[d.id] = d
        return ec2_response(action, "<transitGatewayMulticastDomain>%s</transitGatewayMulticastDomain>" % d.xml())

    def do_DescribeTransitGatewayMulticastDomains(self, account, region, action, p):
        ids = indexed_list(p, "TransitGatewayMulticastDomainIds")
        filters = parse_filters(p)
        out = []
        for d in self.domains.values():
            if d.account != account or d.region != region:
                continue
            if ids and d.id not in ids:
                continue
            if not domain_matches(d, filters):
                continue
            out.append(d)
        for i in ids:
            if i not in self.domains:
                raise AwsError(
                    "InvalidTransitGatewayMulticastDomainId.NotFound",
                    "Transit Gateway Multicast Domain %s was deleted or does not exist." % i,
                )
        items = "".join("<item>%s</item>" % d.xml() for d in out)
        return ec2_response(action, "<transitGatewayMulticastDomains>%s</transitGatewayMulticastDomains>" % items)

    def do_DeleteTransitGatewayMulticastDomain(self, account, region, action, p):
        d = self.domain(account, region, p.get("TransitGatewayMulticastDomainId"), need_available=False)
        if d.state == "deleting":
            raise AwsError("IncorrectState", "Transit Gateway Multicast Domain %s is in invalid state deleting." % d.id)
        if d.associations:
            raise AwsError(
                "IncorrectState",
                "Transit Gateway Multicast Domain %s has associations; disassociate them first." % d.id,
            )
        d.state = "deleting"
        return ec2_response(action, "<transitGatewayMulticastDomain>%s</transitGatewayMulticastDomain>" % d.xml())

    def _assoc_args(self, account, region, p):
        d = self.domain(account, region, p.get("TransitGatewayMulticastDomainId"))
        att_id = p.get("TransitGatewayAttachmentId")
        subnets = indexed_list(p, "SubnetIds")
        if not att_id:
            raise AwsError("MissingParameter", "The request must contain the parameter TransitGatewayAttachmentId")
        if not subnets:
            raise AwsError("MissingParameter", "The request must contain the parameter SubnetIds")
        atts = self.attachments(region, [("transit-gateway-attachment-id", [att_id])])
        att = next((a for a in atts if a["id"] == att_id), None)
        if att is None or att["state"] in ("deleted", "deleting"):
            raise AwsError(
                "InvalidTransitGatewayAttachmentID.NotFound",
                "Transit Gateway Attachment %s was deleted or does not exist." % att_id,
            )
        if att["tgw"] != d.tgw_id:
            raise AwsError(
                "InvalidParameterValue",
                "Transit Gateway Attachment %s does not belong to %s." % (att_id, d.tgw_id),
            )
        return d, att, subnets

    def _assoc_xml(self, d, att, subnets, states):
        items = "".join(
            "<item>%s%s</item>" % (el("subnetId", s), el("state", states[s])) for s in subnets
        )
        return (
            "<associations>"
            + el("transitGatewayMulticastDomainId", d.id)
            + el("transitGatewayAttachmentId", att["id"])
            + el("resourceId", att["resource_id"])
            + el("resourceType", att["resource_type"])
            + el("resourceOwnerId", att["owner"] or d.account)
            + "<subnets>%s</subnets>" % items
            + "</associations>"
        )

    def do_AssociateTransitGatewayMulticastDomain(self, account, region, action, p):
        d, att, subnets = self._assoc_args(account, region, p)
        if att["state"] != "available":
            raise AwsError("IncorrectState", "Transit Gateway Attachment %s is in invalid state %s." % (att["id"], att["state"]))
        att_subnets = self.vpc_attachment_subnets(region, att["id"]) if att["resource_type"] == "vpc" else []
        for s in subnets:
            if att["resource_type"] == "vpc" and s not in att_subnets:
                raise AwsError(
                    "InvalidParameterValue",
                    "Subnet %s is not part of Transit Gateway Attachment %s." % (s, att["id"]),
                )
            for other in self.live(account, region):
                a = other.associations.get(s)
                if a is None:
                    continue
                if other is d and a["attachment"] == att["id"]:
                    continue  # associating an already-associated subnet again is a no-op
                raise AwsError(
                    "InvalidParameterValue",
                    "Subnet %s is already associated with multicast domain %s." % (s, other.id),
                )
        states = {}
        for s in subnets:
            a = d.associations.get(s)
            if a is None:
                a = {"attachment": att["id"], "vpc": att["resource_id"], "state": "associating", "owner": att["owner"]}
                d.associations[s] = a
            states[s] = a["state"]
        return ec2_response(action, self._assoc_xml(d, att, subnets, states))

    def do_DisassociateTransitGatewayMulticastDomain(self, account, region, action, p):
        d = self.domain(account, region, p.get("TransitGatewayMulticastDomainId"), need_available=False)
        att_id = p.get("TransitGatewayAttachmentId")
        subnets = indexed_list(p, "SubnetIds")
        if not att_id or not subnets:
            raise AwsError("MissingParameter", "TransitGatewayAttachmentId and SubnetIds are required")
        states = {}
        att = None
        for s in subnets:
            a = d.associations.get(s)
            if a is None or a["attachment"] != att_id:
                raise AwsError(
                    "InvalidParameterValue",
                    "Subnet %s is not associated with %s through %s." % (s, d.id, att_id),
                )
            a["state"] = "disassociating"
            states[s] = "disassociating"
            att = {"id": att_id, "resource_id": a["vpc"], "resource_type": "vpc", "owner": a.get("owner")}
        return ec2_response(action, self._assoc_xml(d, att, subnets, states))

    def do_GetTransitGatewayMulticastDomainAssociations(self, account, region, action, p):
        d = self.domain(account, region, p.get("TransitGatewayMulticastDomainId"), need_available=False)
        filters = parse_filters(p)
        items = []
        for subnet, a in d.associations.items():
            fields = {
                "resource-id": a["vpc"],
                "resource-type": "vpc",
                "state": a["state"],
                "subnet-id": subnet,
                "transit-gateway-attachment-id": a["attachment"],
            }
            if not fields_match(fields, filters):
                continue
            items.append(
                "<item>"
                + el("transitGatewayAttachmentId", a["attachment"])
                + el("resourceId", a["vpc"])
                + el("resourceType", "vpc")
                + el("resourceOwnerId", a.get("owner") or d.account)
                + "<subnet>%s%s</subnet>" % (el("subnetId", subnet), el("state", a["state"]))
                + "</item>"
            )
        return ec2_response(action, "<multicastDomainAssociations>%s</multicastDomainAssociations>" % "".join(items))

    def _register(self, account, region, p, kind):
        d = self.domain(account, region, p.get("TransitGatewayMulticastDomainId"))
        group = p.get("GroupIpAddress")
        if not group:
            raise AwsError("MissingParameter", "The request must contain the parameter GroupIpAddress")
        if not is_multicast_ip(group):
            raise AwsError("InvalidParameterValue", "%s is not a valid multicast group address." % group)
        enis = indexed_list(p, "NetworkInterfaceIds")
        if not enis:
            raise AwsError("MissingParameter", "The request must contain the parameter NetworkInterfaceIds")
        if kind == "source" and d.options.get("StaticSourcesSupport") != "enable" and d.options.get("Igmpv2Support") == "enable":
            raise AwsError(
                "InvalidParameterValue",
                "Static sources support is not enabled on multicast domain %s." % d.id,
            )
        resolved = []
        for eni in enis:
            subnet = self.eni_subnet(region, eni)
            if subnet is None:
                raise AwsError("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist" % eni)
            a = d.associations.get(subnet)
            if a is None or a["state"] != "associated":
                raise AwsError(
                    "InvalidParameterValue",
                    "Network interface %s is in subnet %s, which is not associated with %s." % (eni, subnet, d.id),
                )
            resolved.append((eni, subnet, a))
        for eni, subnet, a in resolved:
            g = d.groups.setdefault(
                (group, eni),
                {"member": False, "source": False, "subnet": subnet, "attachment": a["attachment"], "vpc": a["vpc"]},
            )
            g[kind] = True
            if kind == "member":
                g["member_type"] = "static"
        return d, group, enis

    def igmp(self, account, region, domain_id, group, eni, leave):
        """An IGMPv2 report (or leave) of `eni` for `group` reaching domain `domain_id`."""
        with self.lock:
            for d in self.domains.values():
                d.advance()
            d = self.domain(account, region, domain_id)
            if d.options.get("Igmpv2Support") != "enable":
                raise AwsError("IncorrectState", "IGMPv2 support is off on %s: reports are ignored." % d.id)
            if not group or not is_multicast_ip(group):
                raise AwsError("InvalidParameterValue", "%s is not a valid multicast group address." % group)
            g = d.groups.get((group, eni))
            if leave:
                if g and g.get("member_type") == "igmp":
                    g["member"] = False
                    if not g["source"]:
                        del d.groups[(group, eni)]
                return
            subnet = self.eni_subnet(region, eni)
            if subnet is None:
                raise AwsError("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist" % eni)
            a = d.associations.get(subnet)
            if a is None or a["state"] != "associated":
                raise AwsError(
                    "IncorrectState",
                    "Subnet %s of %s is not associated with %s: the report is ignored." % (subnet, eni, d.id),
                )
            g = d.groups.setdefault(
                (group, eni),
                {"member": False, "source": False, "subnet": subnet, "attachment": a["attachment"], "vpc": a["vpc"]},
            )
            g["member"] = True
            g["member_type"] = "igmp"

    def _deregister(self, account, region, p, kind):
        d = self.domain(account, region, p.get("TransitGatewayMulticastDomainId"), need_available=False)
        group = p.get("GroupIpAddress")
        enis = indexed_list(p, "NetworkInterfaceIds")
        done = []
        for eni in enis:
            g = d.groups.get((group, eni))
            # members learned by IGMP are not static registrations: deregistering leaves them
            if g and g[kind] and not (kind == "member" and g.get("member_type") == "igmp"):
                g[kind] = False
                done.append(eni)
                if not g["member"] and not g["source"]:
                    del d.groups[(group, eni)]
        return d, group, done

    @staticmethod
    def _reg_xml(tag, list_tag, d, group, enis):
        items = "".join(el("item", e) for e in enis)
        return "<%s>%s<%s>%s</%s>%s</%s>" % (
            tag,
            el("transitGatewayMulticastDomainId", d.id),
            list_tag,
            items,
            list_tag,
            el("groupIpAddress", group),
            tag,
        )

    def do_RegisterTransitGatewayMulticastGroupMembers(self, account, region, action, p):
        d, group, enis = self._register(account, region, p, "member")
        return ec2_response(action, self._reg_xml("registeredMulticastGroupMembers", "registeredNetworkInterfaceIds", d, group, enis))

    def do_RegisterTransitGatewayMulticastGroupSources(self, account, region, action, p):
        d, group, enis = self._register(account, region, p, "source")
        return ec2_response(action, self._reg_xml("registeredMulticastGroupSources", "registeredNetworkInterfaceIds", d, group, enis))

    def do_DeregisterTransitGatewayMulticastGroupMembers(self, account, region, action, p):
        d, group, enis = self._deregister(account, region, p, "member")
        return ec2_response(action, self._reg_xml("deregisteredMulticastGroupMembers", "deregisteredNetworkInterfaceIds", d, group, enis))

    def do_DeregisterTransitGatewayMulticastGroupSources(self, account, region, action, p):
        d, group, enis = self._deregister(account, region, p, "source")
        return ec2_response(action, self._reg_xml("deregisteredMulticastGroupSources", "deregisteredNetworkInterfaceIds", d, group, enis))

    def do_SearchTransitGatewayMulticastGroups(self, account, region, action, p):
        d = self.domain(account, region, p.get("TransitGatewayMulticastDomainId"), need_available=False)
        filters = parse_filters(p)
        items = []
        for (group, eni), g in sorted(d.groups.items()):
            fields = {
                "group-ip-address": group,
                "is-group-member": "true" if g["member"] else "false",
                "is-group-source": "true" if g["source"] else "false",
                "member-type": g.get("member_type", "static") if g["member"] else None,
                "source-type": "static" if g["source"] else None,
                "resource-id": g["vpc"],
                "resource-type": "vpc",
                "subnet-id": g["subnet"],
                "transit-gateway-attachment-id": g["attachment"],
            }
            if not fields_match(fields, filters):
                continue
            items.append(
                "<item>"
                + el("groupIpAddress", group)
                + el("transitGatewayAttachmentId", g["attachment"])
                + el("subnetId", g["subnet"])
                + el("resourceId", g["vpc"])
                + el("resourceType", "vpc")
                + el("resourceOwnerId", d.account)
                + el("networkInterfaceId", eni)
                + el("groupMember", g["member"])
                + el("groupSource", g["source"])
                + (el("memberType", g.get("member_type", "static")) if g["member"] else "")
                + (el("sourceType", "static") if g["source"] else "")
                + "</item>"
            )
        return ec2_response(action, "<multicastGroups>%s</multicastGroups>" % "".join(items))

    # ---- rules moto does not enforce ----------------------------------------

    def check_forwarded(self, account, region, action, p):
        """Raise AwsError when AWS would refuse a call that moto would accept."""
        with self.lock:
            if action == "DeleteTransitGateway":
                tgw_id = p.get("TransitGatewayId")
                if any(d.tgw_id == tgw_id for d in self.live(account, region)):
                    raise AwsError(
                        "IncorrectState",
                        "Transit Gateway %s has multicast domains; delete them first." % tgw_id,
                    )
                atts = self.attachments(region, [("transit-gateway-id", [tgw_id])])
                if any(a["state"] not in ("deleted", "deleting", "rejected", "failed") for a in atts):
                    raise AwsError(
                        "IncorrectState",
                        "Transit Gateway %s has attachments; delete them first." % tgw_id,
                    )
            elif action == "DeleteTransitGatewayVpcAttachment":
                att_id = p.get("TransitGatewayAttachmentId")
                for d in self.live(account, region):
                    if any(a["attachment"] == att_id for a in d.associations.values()):
                        raise AwsError(
                            "IncorrectState",
                            "Transit Gateway Attachment %s is associated with multicast domain %s." % (att_id, d.id),
                        )
            elif action == "CreateTransitGatewayVpcAttachment":
                # moto does not check the TGW state; AWS requires it available.
                tgw_id = p.get("TransitGatewayId")
                tgw = self.tgw(region, tgw_id) if tgw_id else None
                if tgw is None:
                    raise AwsError(
                        "InvalidTransitGatewayID.NotFound",
                        "Transit Gateway %s was deleted or does not exist." % tgw_id,
                    )


def profile_role(ref):
    """The role name IMDS shows for instance profile `ref` (ARN or name): its first role's
    name in moto's IAM; the profile's own name when moto knows no role for it."""
    name = ref.rsplit("/", 1)[-1]
    try:
        from moto.iam.models import iam_backends

        iam = iam_backends[DEFAULT_ACCOUNT]["global"]
        for p in iam.instance_profiles.values():
            if p.name == name or getattr(p, "arn", None) == ref:
                roles = list(getattr(p, "roles", []) or [])
                if roles:
                    return roles[0].name
    except Exception:
        pass
    return name


def routes_to(region, cidr):
    """Every route table's route to `cidr`: target and the target's private address."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[DEFAULT_ACCOUNT][region]
    eni_ip = {}
    for eni in backend.enis.values():
        eni_ip[eni.id] = eni.private_ip_address
    inst_ip = {i.id: i.private_ip_address for i in backend.all_instances()}
    out = []
    for t in backend.route_tables.values():
        routes = t.routes.values() if isinstance(t.routes, dict) else t.routes
        for r in routes:
            if r.destination_cidr_block != cidr:
                continue
            eni = getattr(r, "interface", None)
            inst = getattr(r, "instance", None)
            target = eni.id if eni is not None else (inst.id if inst is not None else None)
            ip = eni_ip.get(target) or inst_ip.get(target)
            out.append({"table": t.id, "target": target, "target_ip": ip})
    return out


def instances_for_imds(region):
    """moto's EC2 instances of `region` with what instance metadata shows of them."""
    import base64

    from moto.ec2.models import ec2_backends

    backend = ec2_backends[DEFAULT_ACCOUNT][region]
    out = []
    for i in backend.all_instances():
        nic = i.nics.get(0) if getattr(i, "nics", None) else None
        subnet_cidr, vpc_cidrs = "", []
        try:
            subnet_cidr = backend.get_subnet(i.subnet_id).cidr_block
        except Exception:
            pass
        try:
            vpc = backend.get_vpc(i.vpc_id)
            assoc = getattr(vpc, "cidr_block_association_set", None) or []
            if isinstance(assoc, dict):
                assoc = list(assoc.values())
            vpc_cidrs = [a.get("cidr_block") for a in assoc if a.get("cidr_block")] or [vpc.cidr_block]
        except Exception:
            pass
        user_data = None
        raw = i.user_data[0] if isinstance(i.user_data, list) and i.user_data else i.user_data
        if raw:
            if not isinstance(raw, (str, bytes)):  # moto's Base64EncodedString
                raw = raw.as_bytes()
            try:
                user_data = base64.b64decode(raw).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                # binary (e.g. gzipped) user data: the lab serves text only
                sys.stderr.write("shim: %s: user data is not UTF-8 text; not served\n" % i.id)
        profile = getattr(i, "iam_instance_profile", None) or {}
        ref = (profile.get("Arn") or profile.get("Name")) if isinstance(profile, dict) else None
        opts = i.metadata_options
        launch = i.launch_time
        if not isinstance(launch, str):
            launch = launch.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(
            {
                "instance_id": i.id,
                "private_ip": i.private_ip,
                "state": i._state.name,
                "instance_type": i.instance_type,
                "image_id": i.image_id,
                "availability_zone": getattr(i.placement, "zone", i.placement),
                "subnet_id": i.subnet_id,
                "subnet_cidr": subnet_cidr,
                "vpc_id": i.vpc_id,
                "vpc_cidrs": vpc_cidrs,
                "interface_id": nic.id if nic else None,
                "mac": nic.mac_address if nic else None,
                "launch_time": launch,
                "tags": {t["key"]: t["value"] for t in i.get_tags()},
                "http_tokens": opts.http_tokens,
                "hop_limit": opts.http_put_response_hop_limit,
                "instance_metadata_tags": opts.instance_metadata_tags,
                "iam_role": profile_role(ref) if ref else None,
                "user_data": user_data,
            }
        )
    return out


def is_multicast_ip(s):
    parts = s.split(".")
    if len(parts) != 4 or not all(x.isdigit() and int(x) < 256 for x in parts):
        return False
    return 224 <= int(parts[0]) <= 239


def fields_match(fields, filters):
    for name, values in filters:
        if name not in fields:
            raise AwsError("InvalidParameterValue", "The filter '%s' is invalid" % name)
        if fields[name] not in values:
            return False
    return True


def domain_matches(d, filters):
    for name, values in filters:
        if name == "state":
            ok = d.state in values
        elif name == "transit-gateway-id":
            ok = d.tgw_id in values
        elif name == "transit-gateway-multicast-domain-id":
            ok = d.id in values
        elif name == "tag-key":
            ok = any(k in values for k, _ in d.tags)
        elif name.startswith("tag:"):
            key = name[4:]
            ok = any(k == key and v in values for k, v in d.tags)
        else:
            raise AwsError("InvalidParameterValue", "The filter '%s' is invalid" % name)
        if not ok:
            return False
    return True



# --------------------------------------------------------------------------
# CloudFormation SignalResource (moto has no such call)

CFN_NS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"


def sigv4_check(environ, body, secret_for):
    """None when the request carries a valid SigV4 signature by a known key (or an unknown
    key: moto accepts any), else (code, message)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = re.match(
        r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, *"
        r"SignedHeaders=([^,]+), *Signature=([0-9a-f]{64})$",
        auth,
    )
    if not m:
        return ("MissingAuthenticationToken", "Request is missing Authentication Token")
    key, day, region, service, signed, signature = m.groups()
    secret = secret_for(key)
    if secret is None:
        return None
    amz_date = environ.get("HTTP_X_AMZ_DATE", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return ("IncompleteSignature", "X-Amz-Date is missing or malformed")
    skew = abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds())
    if skew > 900 or not amz_date.startswith(day):
        return ("SignatureDoesNotMatch", "Signature expired or date mismatch: %s" % amz_date)

    def header(name):
        if name == "content-type":
            v = environ.get("CONTENT_TYPE", "")
        elif name == "content-length":
            v = environ.get("CONTENT_LENGTH", "")
        else:
            v = environ.get("HTTP_" + name.upper().replace("-", "_"), "")
        return " ".join(v.strip().split())

    names = signed.split(";")
    quote = lambda x: urllib.parse.quote(x, safe="-_.~")
    query = sorted(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    path = environ.get("PATH_INFO", "") or "/"
    canonical = "\n".join(
        [
            environ.get("REQUEST_METHOD", "GET"),
            "/".join(quote(seg) for seg in path.split("/")),
            "&".join("%s=%s" % (quote(k), quote(v)) for k, v in query),
            "".join("%s:%s\n" % (n, header(n)) for n in names),
            signed,
            environ.get("HTTP_X_AMZ_CONTENT_SHA256") or hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    k = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    want = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        return (
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return None


class Signals:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.signals = []
            self.stacks = {}
            self.secrets = {}

    def secret_for(self, key):
        with self.lock:
            return self.secrets.get(key)

    def handle(self, environ, body, params):
        denied = sigv4_check(environ, body, self.secret_for)
        if denied:
            raise AwsError(denied[0], denied[1], 403)
        for name in ("StackName", "LogicalResourceId", "UniqueId", "Status"):
            if not params.get(name):
                raise AwsError("ValidationError", "%s is required" % name)
        stack, res, status = params["StackName"], params["LogicalResourceId"], params["Status"]
        if status not in ("SUCCESS", "FAILURE"):
            raise AwsError(
                "ValidationError",
                "1 validation error detected: Value '%s' at 'status' failed to satisfy "
                "constraint: Member must satisfy enum value set: [SUCCESS, FAILURE]" % status,
            )
        if len(params["UniqueId"]) > 64:
            raise AwsError("ValidationError", "UniqueId is longer than 64 characters")
        key = re.search(r"Credential=([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        with self.lock:
            if self.stacks:
                if stack not in self.stacks:
                    raise AwsError("ValidationError", "Stack %s does not exist" % stack)
                if res not in self.stacks[stack]:
                    raise AwsError(
                        "ValidationError",
                        "Resource %s does not exist for stack %s" % (res, stack),
                    )
            self.signals.append(
                {
                    "stack": stack,
                    "resource": res,
                    "unique_id": params["UniqueId"],
                    "status": status,
                    "time": datetime.datetime.now(datetime.timezone.utc).timestamp(),
                    "access_key": key.group(1) if key else None,
                    "verified": key is not None and key.group(1) in self.secrets,
                }
            )
        body = (
            '<SignalResourceResponse xmlns="%s"><ResponseMetadata><RequestId>%s</RequestId>'
            "</ResponseMetadata></SignalResourceResponse>" % (CFN_NS, request_id())
        )
        return 200, [("Content-Type", "text/xml")], body.encode()

# --------------------------------------------------------------------------
# the WSGI middleware


class Shim:
    def __init__(self, moto_app):
        self.moto_app = moto_app
        self.mcast = MulticastState(moto_app)
        self.lock = threading.Lock()
        self.calls = []
        self.faults = {}  # action -> [count, when]
        self.signals = Signals()

    def control(self, environ):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD")
        q = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        if path == "/_shim/instances" and method == "GET":
            return 200, {"instances": instances_for_imds(q.get("region", "eu-west-1"))}
        if path == "/_shim/routes" and method == "GET":
            return 200, {"routes": routes_to(q.get("region", "eu-west-1"), q.get("cidr", ""))}
        if path == "/_shim/signals" and method == "GET":
            with self.signals.lock:
                return 200, {"signals": list(self.signals.signals)}
        if path == "/_shim/stack" and method == "POST":
            if not q.get("name"):
                return 400, {"error": "name= is required"}
            with self.signals.lock:
                self.signals.stacks[q["name"]] = set(filter(None, q.get("resources", "").split(",")))
            return 200, {"ok": True}
        if path == "/_shim/igmp" and method == "POST":
            try:
                self.mcast.igmp(
                    DEFAULT_ACCOUNT,
                    q.get("region", "eu-west-1"),
                    q.get("domain"),
                    q.get("group"),
                    q.get("eni"),
                    q.get("leave") in ("1", "true"),
                )
            except AwsError as e:
                return 409, {"error": e.code, "message": e.message}
            return 200, {"ok": True}
        if path == "/_shim/credentials" and method == "POST":
            if not q.get("key") or not q.get("secret"):
                return 400, {"error": "key= and secret= are required"}
            with self.signals.lock:
                self.signals.secrets[q["key"]] = q["secret"]
            return 200, {"ok": True}
        with self.lock:
            if path == "/_shim/calls" and method == "GET":
                every = q.get("all") in ("1", "true")
                return 200, {"calls": [c for c in self.calls if every or c["mutating"]]}
            if path == "/_shim/reset" and method == "POST":
                self.calls.clear()
                self.faults.clear()
                return 200, {"ok": True}
            if path == "/_shim/fail" and method == "POST":
                action = q.get("action")
                if not action:
                    return 400, {"error": "action= is required"}
                when = q.get("when", "before")
                if when not in ("before", "after"):
                    return 400, {"error": "when= must be before or after"}
                self.faults[action] = [int(q.get("count", "1")), when]
                return 200, {"ok": True}
            if path == "/_shim/health":
                return 200, {"ok": True}
        return 404, {"error": "unknown shim endpoint"}

    def take_fault(self, action):
        with self.lock:
            f = self.faults.get(action)
            if not f or f[0] <= 0:
                return None
            f[0] -= 1
            if f[0] == 0:
                del self.faults[action]
            return f[1]

    def record(self, service, action, failed, environ=None):
        if action:
            m = re.search(r"Credential=([^/]+)/", (environ or {}).get("HTTP_AUTHORIZATION", ""))
            with self.lock:
                self.calls.append(
                    {
                        "service": service,
                        "action": action,
                        "failed": failed,
                        "mutating": is_mutating(action),
                        "access_key": m.group(1) if m else None,
                    }
                )

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_shim/"):
            status, obj = self.control(environ)
            return respond(start_response, status, [("Content-Type", "application/json")], json.dumps(obj).encode())

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = _BytesInput(body)
        environ["CONTENT_LENGTH"] = str(len(body))

        if path.startswith("/moto-api/reset") and environ.get("REQUEST_METHOD") == "POST":
            self.mcast.reset()
            self.signals.reset()

        protocol, service, action, params = classify(environ, body)
        region, _ = signing_scope(environ)
        account = DEFAULT_ACCOUNT

        fault = self.take_fault(action) if action else None
        if fault == "before":
            self.record(service, action, True, environ)
            status, headers, payload = error_response(
                protocol, service, "InternalError", "Injected fault on %s" % action, 500
            )
            return respond(start_response, status, headers, payload)

        try:
            if protocol == "query" and service == "cloudformation" and action == "SignalResource":
                status, headers, payload = self.signals.handle(environ, body, params)
                self.record(service, action, False, environ)
                return respond(start_response, status, headers, payload)
            if protocol == "query" and service == "ec2" and action in MULTICAST_ACTIONS:
                status, headers, payload = self.mcast.handle(account, region, action, params)
                self.record(service, action, fault == "after", environ)
                if fault == "after":
                    status, headers, payload = error_response(
                        protocol, service, "InternalError", "Injected fault after %s" % action, 500
                    )
                return respond(start_response, status, headers, payload)
            if protocol == "query" and service == "ec2":
                self.mcast.check_forwarded(account, region, action, params)
        except AwsError as e:
            self.record(service, action, True, environ)
            status, headers, payload = error_response(protocol or "query", service or "ec2", e.code, e.message, e.status)
            return respond(start_response, status, headers, payload)

        if fault == "after":
            captured = {}

            def capture(status, headers, exc_info=None):
                captured["status"] = status

            chunks = self.moto_app(environ, capture)
            b"".join(chunks)
            if hasattr(chunks, "close"):
                chunks.close()
            self.record(service, action, True, environ)
            status, headers, payload = error_response(
                protocol, service, "InternalError", "Injected fault after %s" % action, 500
            )
            return respond(start_response, status, headers, payload)

        holder = {}

        def sr(status, headers, exc_info=None):
            holder["status"] = status
            return start_response(status, headers, exc_info)

        result = self.moto_app(environ, sr)
        try:
            failed = not holder.get("status", "200").startswith("2")
        except Exception:
            failed = False
        self.record(service, action, failed, environ)
        return result


class _BytesInput:
    def __init__(self, data):
        import io

        self._b = io.BytesIO(data)

    def read(self, *a):
        return self._b.read(*a)

    def readline(self, *a):
        return self._b.readline(*a)

    def readlines(self, *a):
        return self._b.readlines(*a)

    def __iter__(self):
        return iter(self._b)


STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
}


def respond(start_response, status, headers, payload):
    start_response(
        "%d %s" % (status, STATUS_TEXT.get(status, "Status")),
        list(headers) + [("Content-Length", str(len(payload)))],
    )
    return [payload]


def main(argv):
    import argparse

    parser = argparse.ArgumentParser(
        prog="aws-emulator",
        description="moto server behind a shim that adds the TGW multicast-domain API, "
        "call counting (GET /_shim/calls) and fault injection (POST /_shim/fail).",
    )
    parser.add_argument("port", type=int, help="TCP port on 127.0.0.1")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback only by default)")
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when the process that started the emulator goes away (test harnesses)",
    )
    args = parser.parse_args(argv)

    if args.exit_with_parent:
        import os
        import time

        parent = int(os.environ.get("AWS_EMULATOR_PARENT_PID") or os.getppid())

        def watch():
            while True:
                if os.getppid() != parent:
                    os._exit(0)
                time.sleep(0.5)

        threading.Thread(target=watch, daemon=True).start()

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import WSGIRequestHandler, make_server

    moto_app = DomainDispatcherApplication(create_backend_app)
    app = Shim(moto_app)

    class Handler(WSGIRequestHandler):
        # Keep-alive: the SDKs reuse connections, which saves a TCP handshake per call.
        protocol_version = "HTTP/1.1"

        def log_request(self, code="-", size="-"):
            # the lab's IMDS emulator polls this every second: not worth a log line each
            if not self.path.startswith("/_shim/instances"):
                super().log_request(code, size)

    server = make_server(args.host, args.port, app, threaded=True, request_handler=Handler)
    sys.stderr.write("aws-emulator listening on http://%s:%d\n" % (args.host, server.server_port))
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
