{{/* One Herald Deployment: (dict "root" $ "component" "node"|"router"|"control").
     The node adds the drain settings (preStop `herald drain`, grace period from the window). */}}
{{- define "herald.deployment" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $c := index $root.Values $component -}}
{{- $isNode := eq $component "node" -}}
{{- $autoscaled := and $isNode $root.Values.autoscaling.enabled -}}
{{- $ctx := dict "root" $root "component" $component -}}
{{- $alg := $root.Values.config.jwt_algorithm | default "HS256" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "herald.fullname" $root }}-{{ $component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "herald.labels" $ctx | nindent 4 }}
spec:
  {{- if not $autoscaled }}
  replicas: {{ $c.replicas }}
  {{- else if $root.Release.IsInstall }}
  {{- /* The autoscaler owns the count; seed it on the first install only. */}}
  replicas: {{ $root.Values.autoscaling.minReplicas }}
  {{- end }}
  revisionHistoryLimit: {{ $c.revisionHistoryLimit }}
  minReadySeconds: {{ $c.minReadySeconds }}
  progressDeadlineSeconds: {{ $c.progressDeadlineSeconds }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # Never below the desired count: a new pod is ready before an old one drains.
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "herald.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "herald.selectorLabels" $ctx | nindent 8 }}
        app.kubernetes.io/part-of: herald
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "herald.configChecksum" $root }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "herald.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- if $isNode }}
      # preStop sleep + drain window + margin: the kubelet never kills a node mid-drain.
      terminationGracePeriodSeconds: {{ include "herald.node.gracePeriod" $root }}
      {{- else }}
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      topologySpreadConstraints:
        {{- if $c.topologySpreadConstraints }}
        {{- toYaml $c.topologySpreadConstraints | nindent 8 }}
        {{- else }}
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "herald.selectorLabels" $ctx | nindent 14 }}
          matchLabelKeys: [pod-template-hash]
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "herald.selectorLabels" $ctx | nindent 14 }}
          matchLabelKeys: [pod-template-hash]
        {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $component }}
          image: {{ include "herald.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ $component }}]
          ports:
            - name: http
              containerPort: {{ $c.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "herald.fullname" $root }}-config
          env:
            - name: HERALD_NODE_ID
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: HERALD_PORT
              value: {{ $c.port | quote }}
            {{- if and (eq $root.Values.redis.mode "external") $root.Values.redis.existingSecret }}
            - name: HERALD_REDIS
              valueFrom:
                secretKeyRef:
                  name: {{ $root.Values.redis.existingSecret }}
                  key: {{ $root.Values.redis.existingSecretKey }}
            {{- end }}
            - name: HERALD_API_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ include "herald.secretName" $root }}
                  key: {{ $root.Values.auth.keys.apiKey }}
            {{- if eq $alg "HS256" }}
            - name: HERALD_JWT_SECRET
              valueFrom:
                secretKeyRef:
                  name: {{ include "herald.secretName" $root }}
                  key: {{ $root.Values.auth.keys.jwtSecret }}
            {{- else if eq $root.Values.auth.verifyWith "jwks" }}
            - name: HERALD_JWKS_FILE
              value: /etc/herald/auth/{{ $root.Values.auth.keys.jwks }}
            {{- else }}
            - name: HERALD_JWT_PUBLIC_KEY
              value: /etc/herald/auth/{{ $root.Values.auth.keys.jwtPublicKey }}
            {{- end }}
            {{- if $isNode }}
            - name: HERALD_DRAIN_WINDOW
              value: {{ $c.drainWindow | quote }}
            - name: HERALD_MAX_CONNECTIONS
              value: {{ $c.maxConnections | quote }}
            {{- end }}
            {{- if and (eq $component "control") $c.dashboardUrl }}
            - name: HERALD_DASHBOARD_URL
              value: {{ $c.dashboardUrl | quote }}
            {{- end }}
            {{- range $k, $v := $c.env }}
            - name: {{ include "herald.envName" $k }}
              value: {{ include "herald.envValue" $v | quote }}
            {{- end }}
          startupProbe:
            httpGet: {path: /healthz, port: http}
            {{- toYaml $c.startupProbe | nindent 12 }}
          readinessProbe:
            # 503 while draining or while Redis is unreachable.
            httpGet: {path: /readyz, port: http}
            {{- toYaml $c.readinessProbe | nindent 12 }}
          livenessProbe:
            # Stays 200 while draining or stopping: the probe never kills a drain.
            httpGet: {path: /healthz, port: http}
            {{- toYaml $c.livenessProbe | nindent 12 }}
          {{- if $isNode }}
          lifecycle:
            preStop:
              exec:
                # Drain (readiness 503, reconnect advisories, closes spread over the window) and
                # wait until the node is empty; SIGTERM follows and finds nothing left to close.
                {{- if gt (int $c.preStopDelaySeconds) 0 }}
                command:
                  - /bin/sh
                  - -c
                  - sleep {{ $c.preStopDelaySeconds }}; exec herald drain --url http://127.0.0.1:{{ $c.port }}
                {{- else }}
                command: [herald, drain, --url, "http://127.0.0.1:{{ $c.port }}"]
                {{- end }}
          {{- end }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if ne $alg "HS256" }}
            - name: auth
              mountPath: /etc/herald/auth
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if ne $alg "HS256" }}
        - name: auth
          secret:
            secretName: {{ include "herald.secretName" $root }}
            defaultMode: 0440
            items:
              {{- if eq $root.Values.auth.verifyWith "jwks" }}
              - {key: {{ $root.Values.auth.keys.jwks }}, path: {{ $root.Values.auth.keys.jwks }}}
              {{- else }}
              - {key: {{ $root.Values.auth.keys.jwtPublicKey }}, path: {{ $root.Values.auth.keys.jwtPublicKey }}}
              {{- end }}
        {{- end }}
{{- end -}}

{{/* Service of a component. */}}
{{- define "herald.service" -}}
{{- $root := .root -}}
{{- $c := index $root.Values .component -}}
{{- $ctx := dict "root" $root "component" .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "herald.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "herald.labels" $ctx | nindent 4 }}
  {{- with $c.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $c.service.type }}
  # No session affinity: clients resume from their offsets on any pod.
  sessionAffinity: None
  selector:
    {{- include "herald.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: http
      port: {{ $c.port }}
      targetPort: http
      protocol: TCP
{{- end -}}

{{/* PodDisruptionBudget of a component, only when it runs more than one replica. */}}
{{- define "herald.pdb" -}}
{{- $root := .root -}}
{{- $c := index $root.Values .component -}}
{{- $ctx := dict "root" $root "component" .component -}}
{{- $replicas := int $c.replicas -}}
{{- if and (eq .component "node") $root.Values.autoscaling.enabled -}}
{{- $replicas = int $root.Values.autoscaling.minReplicas -}}
{{- end -}}
{{- if and $c.pdb.enabled (gt $replicas 1) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "herald.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "herald.labels" $ctx | nindent 4 }}
spec:
  maxUnavailable: {{ $c.pdb.maxUnavailable }}
  # Pods that never became ready do not block node drains.
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "herald.selectorLabels" $ctx | nindent 6 }}
{{- end -}}
{{- end -}}
